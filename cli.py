"""The `judge` command line: a thin typer layer over the library (each command is one library call)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from judge.errors import InputError

app = typer.Typer(help="Distil an online safety judge (GPT-4o) into an offline one.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False, add_completion=False)


def fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(code=1)


def echo_skipped(dataset) -> None:
    typer.echo(dataset.summary(), err=True)
    for skipped in dataset.skipped:
        typer.echo(f"  skipped {skipped}", err=True)


Scheme = Annotated[Optional[str], typer.Option(help="Label scheme: vlsbench, mmsafetybench or a scheme file (default: detect).")]
SkipInvalid = Annotated[bool, typer.Option("--skip-invalid", help="Skip bad lines (each is listed) instead of stopping.")]


@app.command()
def distill(
    labels: Annotated[list[Path], typer.Argument(help="JSONL file(s) of responses with teacher labels.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact folder to write.")] = Path("runs/judge"),
    backbone: Annotated[Optional[str], typer.Option(help="Preset (minilm, smollm2-135m), model folder, .gguf or hub id.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file of training hyperparameters.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override one hyperparameter, KEY=VALUE (repeatable).")] = [],
    epochs: Annotated[Optional[float], typer.Option(help="Training epochs (early stopping may end sooner).")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Tokens the student reads per response.")] = None,
    view: Annotated[Optional[str], typer.Option(help="Input view: response, question, image, full.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for splits and training.")] = None,
    scheme: Scheme = None,
    label_field: Annotated[Optional[str], typer.Option(help="Read the teacher label from this field.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last checkpoint.")] = False,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Train a student on teacher labels; write a judge artifact and its held-out agreement report."""
    from judge.records import read_records
    from judge.report import format_agreement
    from train.config import TrainConfig, parse_overrides
    from train.distill import distill as run_distill

    try:
        dataset = read_records(labels, scheme=scheme, label_field=label_field, skip_invalid=skip_invalid)
        echo_skipped(dataset)
        overrides = {**parse_overrides(set_), "backbone": backbone, "epochs": epochs, "max_length": max_length,
                     "view": view, "seed": seed}
        report = run_distill(dataset, out, TrainConfig.resolve(config, overrides), resume=resume)
    except InputError as exc:
        raise fail(exc) from None
    typer.echo(f"\nagreement with the teacher on held-out prompt groups ({dataset.scheme.name}):")
    typer.echo(format_agreement(report))
    typer.echo(f"\njudge written to {out}")


@app.command()
def score(
    responses: Annotated[list[Path], typer.Argument(help="JSONL file(s) of responses to judge.")],
    judge_dir: Annotated[Path, typer.Option("--judge", "-j", help="Artifact folder from `judge distill`.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Scored JSONL to write.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Responses per forward pass.")] = None,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Label every response offline and print the benchmark's rates, overall and per model / category."""
    from judge.evaluate import rate_summary
    from judge.model import Judge
    from judge.records import read_records, write_jsonl
    from judge.report import format_rates
    from judge.score import score_records

    try:
        judge = Judge.load(judge_dir)
        dataset = read_records(responses, scheme=judge.scheme, skip_invalid=skip_invalid)
        echo_skipped(dataset)
        rows, predictions = score_records(judge, dataset.records, batch_size=batch_size, progress=True)
    except InputError as exc:
        raise fail(exc) from None
    if output:
        write_jsonl(output, rows)
        typer.echo(f"wrote {len(rows)} scored responses to {output}", err=True)
    typer.echo(format_rates(rate_summary(dataset.records, [p.label for p in predictions], judge.scheme), judge.scheme.classes))


@app.command("eval")
def eval_(
    scored: Annotated[Path, typer.Argument(help="Scored JSONL from `judge score`.")],
    reference: Annotated[Optional[Path], typer.Option(help="JSONL with the teacher's labels (default: the scored file's own).")] = None,
    png: Annotated[Optional[Path], typer.Option(help="Where to draw the confusion matrix (default: beside SCORED).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report as JSON.")] = None,
    scheme: Scheme = None,
) -> None:
    """Agreement of the judge with the teacher: kappa, accuracy, F1, confusion matrix, per group."""
    from judge.evaluate import evaluate, load_pairs
    from judge.report import format_agreement, plot_confusion

    try:
        records, predicted, resolved, info = load_pairs(str(scored), str(reference) if reference else None, scheme=scheme)
    except InputError as exc:
        raise fail(exc) from None
    if not records:
        raise fail(InputError("no scored response has a teacher label to compare with", path=reference or scored))
    report = evaluate(records, predicted, resolved)
    typer.echo(f"{info['paired']} paired responses ({info['unpaired_reference']} teacher labels had no scored response)")
    typer.echo(format_agreement(report))
    image = plot_confusion(report["overall"]["confusion"], resolved.classes, png or scored.with_suffix(".confusion.png"))
    typer.echo(f"\nconfusion matrix drawn to {image}")
    if json_out:
        json_out.write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    app()
