"""The `judge` command line: a thin typer layer over the library (each command is one library call)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from judge.cache import DEFAULT_CACHE
from judge.errors import InputError
from judge.textio import check_writable
from judge.training.config import MAX_HOLDOUT

app = typer.Typer(help="Distil an online safety judge (GPT-4o) into an offline one.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False, add_completion=False)


def print_version(value: bool) -> None:
    if value:
        from judge import __version__

        typer.echo(f"judge-distill {__version__}")
        raise typer.Exit()


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show library logs and warnings.")] = False,
         version: Annotated[bool, typer.Option("--version", callback=print_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Library chatter (model load reports, deprecation warnings) stays quiet unless asked for."""
    if not verbose:
        import logging
        import os
        import warnings

        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # the hub's bars for every weight load and save; our stages report their own progress
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        warnings.filterwarnings("ignore", category=FutureWarning)
        # bitsandbytes warns on every CPU import that an optional kernel package is absent, and `kernels`
        # that offline it cannot check the publisher of the kernel bitsandbytes asks for
        for noisy in ("bitsandbytes", "kernels"):
            logging.getLogger(noisy).setLevel(logging.ERROR)


def fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(code=1)


def unfinished_collect(stats: dict, cache: Path, *, training: bool = False) -> typer.Exit | None:
    """The exit of a teacher run that stopped short (None when it finished; see `judge.collect.stop_reason`).
    ``training``: `distill --teacher`, which then trains nothing and writes no labels."""
    from judge.collect import stop_reason

    reason, code = stop_reason(stats, cache, in_output=not training)
    if reason:
        return fail(InputError(reason + ("; nothing was trained" if training else "")))
    return typer.Exit(code=code) if code else None


def judge_and_labels(judge_dir: Path, path: Path, skip_invalid: bool):
    """A judge and teacher-labelled records in its scheme (what calibration and drift compare)."""
    from judge.model import Judge
    from judge.records import read_records

    judge = Judge.load(judge_dir)
    dataset = read_records(path, scheme=judge.scheme, require_labels=True, skip_invalid=skip_invalid)
    echo_skipped(dataset)
    return judge, dataset


def echo_skipped(dataset) -> None:
    typer.echo(dataset.summary(), err=True)
    for skipped in dataset.skipped:
        typer.echo(f"  skipped {skipped}", err=True)


Scheme = Annotated[Optional[str], typer.Option(help="Label scheme: vlsbench, mmsafetybench or a scheme file (default: detect).")]
SkipInvalid = Annotated[bool, typer.Option("--skip-invalid", help="Skip bad lines (each is listed) instead of stopping.")]
Format = Annotated[Optional[str], typer.Option("--format", help="Input format: jsonl, csv, vlsbench, mmsafetybench (default: detect per file).")]
BenchmarkData = Annotated[Optional[Path], typer.Option(help="VLSBench prompt file (data.json) to join on id for category, sub-category, image description.")]
ModelName = Annotated[Optional[str], typer.Option(help="Evaluated model's name for VLSBench outputs (default: from {model}_outputs.json).")]
BaseUrl = Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else OpenAI).")]
INPUTS = "Files, globs or folders: JSONL, CSV, VLSBench outputs or MM-SafetyBench answer files"


@app.command()
def distill(
    labels: Annotated[list[Path], typer.Argument(help=f"{INPUTS}, with teacher labels.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Artifact folder to write.")] = Path("runs/judge"),
    backbone: Annotated[Optional[str], typer.Option(help="Preset (minilm, smollm2-135m), model folder, .gguf or hub id.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML or YAML file of training hyperparameters (train/defaults.toml).")] = None,
    quant: Annotated[Optional[str], typer.Option(help="4bit (QLoRA), 8bit or none; default: 4bit on CUDA for a backbone of 1B+ parameters, else none.")] = None,
    merge: Annotated[Optional[bool], typer.Option("--merge/--adapter", help="Export a merged model instead of the LoRA adapter (unquantized only).")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Override one hyperparameter, KEY=VALUE (repeatable).")] = [],
    epochs: Annotated[Optional[float], typer.Option(help="Training epochs (early stopping may end sooner).")] = None,
    max_length: Annotated[Optional[int], typer.Option(help="Tokens the student reads per response.")] = None,
    view: Annotated[Optional[str], typer.Option(help="Input view: response, question, image, full (default: searched).")] = None,
    student: Annotated[Optional[str], typer.Option(help="auto (best of a portfolio by grouped CV), lexical, transformer, PRESET-lora, PRESET-full, probe, PRESET-probe, stack, blend or ensemble.")] = None,
    budget: Annotated[Optional[str], typer.Option(help="Wall time for --student auto's cross-validation, the winner's refit paid for in advance, e.g. 90s, 15m, 1h, none.")] = None,
    portfolio: Annotated[Optional[str], typer.Option(help="Candidates for --student auto: default, quick (the demo: 3 folds, 2 epochs, 64 tokens, 100s) or wide (+ LoRA).")] = None,
    holdout: Annotated[Optional[float], typer.Option(min=0.0, max=MAX_HOLDOUT, help=f"Keep this share of the rows, in whole prompt groups, as an untouched test split, up to {MAX_HOLDOUT} (default 0: every label trains the judge).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for splits and training.")] = None,
    scheme: Scheme = None,
    label_field: Annotated[Optional[str], typer.Option(help="Read the teacher label from this field.")] = None,
    skip_invalid: SkipInvalid = False,
    format_: Format = None,
    benchmark_data: BenchmarkData = None,
    model_name: ModelName = None,
    teacher: Annotated[Optional[str], typer.Option(help="Label rows that have no teacher label with this model first (cached, see `judge collect`).")] = None,
    base_url: BaseUrl = None,
    api_key: Annotated[Optional[str], typer.Option(help="--teacher's API key (default: OPENAI_API_KEY). Never stored.")] = None,
    cache: Annotated[Path, typer.Option(help="--teacher's cache (SQLite), shared with `judge collect`.")] = Path(DEFAULT_CACHE),
) -> None:
    """Train a student on teacher labels; write a judge artifact and its held-out agreement report."""
    from judge.calibrate import format_calibration
    from judge.records import read_records
    from judge.report import format_agreement
    from judge.training.config import TrainConfig, parse_overrides
    from judge.training.distill import distill as run_distill
    from judge.training.portfolio import format_leaderboard, selection_title

    try:
        check_writable(out, folder=True)
        dataset = read_records(labels, format=format_, benchmark_data=benchmark_data, model_name=model_name,
                               scheme=scheme, label_field=label_field, skip_invalid=skip_invalid)
        echo_skipped(dataset)
        if teacher:
            from judge.training import ranks

            if ranks.distributed():
                raise InputError("--teacher under a distributed launch would pay for every label once per process: "
                                 "run `judge collect` first, then distil the labelled file")
            from judge.collect import TeacherConfig, format_stats, label_missing

            stats = label_missing(dataset, TeacherConfig(model=teacher, base_url=base_url, api_key=api_key,
                                                         rubric=dataset.scheme.name), cache_path=cache).stats
            typer.echo(format_stats(stats), err=True)
            if stop := unfinished_collect(stats, cache, training=True):
                raise stop
        options = {"backbone": backbone, "epochs": epochs, "max_length": max_length, "view": view, "views": view,
                   "seed": seed, "quant": quant, "merge": merge, "student": student, "budget": budget,
                   "portfolio": portfolio, "holdout": holdout}
        # an option not given must not clear the same key given with --set
        overrides = {**parse_overrides(set_), **{k: v for k, v in options.items() if v is not None}}
        report = run_distill(dataset, out, TrainConfig.resolve(config, overrides))
    except InputError as exc:
        raise fail(exc) from None
    if not report:  # a distributed launch's other ranks: rank 0 writes and reports
        return
    typer.echo(f"\ncandidates ({selection_title(report)}):\n{format_leaderboard(report['leaderboard'])}")
    typer.echo(f"\nagreement with the teacher on held-out prompt groups ({dataset.scheme.name}), student {report['student']} "
               f"refitted on {report['trained_on']} rows; {report['method']}:")
    typer.echo(format_agreement(report))
    if report.get("calibration"):
        typer.echo(f"\n{format_calibration(report['calibration'])}")
    typer.echo(f"\njudge written to {out}")


@app.command()
def collect(
    responses: Annotated[list[Path], typer.Argument(help=f"{INPUTS}, to label.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Labels JSONL to write: input rows + label fields `judge distill` reads.")] = None,
    teacher: Annotated[str, typer.Option(help="Teacher model, as the endpoint names it.")] = "gpt-4o-2024-08-06",
    base_url: BaseUrl = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key (default: OPENAI_API_KEY). Never stored.")] = None,
    scheme: Scheme = None,
    rubric: Annotated[Optional[str], typer.Option(help="Built-in rubric: vlsbench or mmsafetybench (default: the scheme's).")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help="Your own prompt template with {question} and {response}.")] = None,
    images: Annotated[bool, typer.Option("--images/--no-images", help="Send each record's image along.")] = True,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at once.")] = 16,
    rpm: Annotated[Optional[int], typer.Option(min=1, help="Requests-per-minute limit.")] = None,
    tpm: Annotated[Optional[int], typer.Option(min=1, help="Tokens-per-minute limit.")] = None,
    max_cost: Annotated[Optional[float], typer.Option(min=0, help="Stop cleanly once this many USD are spent.")] = None,
    price: Annotated[Optional[str], typer.Option(help="Teacher price as USD per 1M input,output tokens, e.g. 2.5,10.")] = None,
    sample: Annotated[Optional[int], typer.Option(min=1, help="Label a seeded stratified sample of N records (N per group with --per).")] = None,
    stratify_by: Annotated[str, typer.Option(help="Comma-separated fields the sample keeps in proportion.")] = "model,category",
    seed: Annotated[int, typer.Option(help="Seed for --sample.")] = 0,
    per: Annotated[Optional[str], typer.Option(help="Draw --sample N records per value of this field (e.g. model) and record the draw for `judge estimate`.")] = None,
    draw: Annotated[str, typer.Option(help="With --per: uniform, or active (more labels where the student is unsure, weighted back by `judge estimate`).")] = "uniform",
    select: Annotated[Optional[str], typer.Option(help="'uncertain': label the --sample N unlabelled records the judge is least sure of (for training, never for estimates).")] = None,
    judge_dir: Annotated[Optional[Path], typer.Option("--judge", "-j", help="Judge whose probabilities drive --draw active / --select uncertain (default: the rows' judge_probs).")] = None,
    batch: Annotated[bool, typer.Option(help="Use the Batch API (half price; a rerun resumes an interrupted batch).")] = False,
    retry_failed: Annotated[bool, typer.Option(help="Pay again for requests whose cached answer is a refusal or unparseable (a retry that fails leaves it cached).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print requests, cached and estimated cost; send nothing.")] = False,
    cache: Annotated[Path, typer.Option(help="Teacher cache (SQLite).")] = Path(DEFAULT_CACHE),
    skip_invalid: SkipInvalid = False,
    format_: Format = None,
) -> None:
    """Label responses with the teacher (GPT-4o); every answer is cached, so nothing is paid for twice."""
    from judge.collect import TeacherConfig, collect as run_collect, format_plan, format_stats, labelled_rows, plan, teacher_sample
    from judge.records import read_records, write_jsonl
    from judge.teacher import BUILTIN_RUBRICS, parse_price

    try:
        if not dry_run:  # refused before anything is read or paid for
            if output is None:
                raise InputError("say where to write the labels with --output/-o (or use --dry-run)")
            check_writable(output)
        dataset = read_records(responses, format=format_, scheme=scheme or (rubric if rubric in BUILTIN_RUBRICS else None),
                               skip_invalid=skip_invalid)
        echo_skipped(dataset)
        records, drawn = teacher_sample(dataset, sample, stratify_by=stratify_by.split(","), seed=seed, per=per,
                                        draw=draw, select=select, judge_dir=judge_dir)
        config = TeacherConfig(model=teacher, base_url=base_url, api_key=api_key, rubric=rubric or dataset.scheme.name,
                               prompt_file=str(prompt_file) if prompt_file else None, images=images, concurrency=concurrency,
                               rpm=rpm, tpm=tpm, max_cost=max_cost, prices={teacher: parse_price(price)} if price else None,
                               batch=batch, retry_failed=retry_failed)
        if dry_run:
            typer.echo(format_plan(plan(records, config, scheme=dataset.scheme, cache_path=cache)))
            return
        result = run_collect(records, config, scheme=dataset.scheme, cache_path=cache, progress=True)
    except InputError as exc:
        raise fail(exc) from None
    write_jsonl(output, labelled_rows(records, result, drawn))
    typer.echo(format_stats(result.stats))
    typer.echo(f"wrote {len(records)} rows to {output}", err=True)
    if stop := unfinished_collect(result.stats, cache):
        raise stop


@app.command()
def score(
    responses: Annotated[list[Path], typer.Argument(help=f"{INPUTS}, to judge.")],
    judge_dir: Annotated[Path, typer.Option("--judge", "-j", help="Artifact folder from `judge distill`.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Scored JSONL to write.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Responses per forward pass.")] = None,
    engine: Annotated[str, typer.Option(help='local (this process) or ray (actors on a Ray cluster, one GPU each when it has GPUs; pip install "judge-distill\\[ray]").')] = "local",
    address: Annotated[Optional[str], typer.Option(help="--engine ray: join this cluster (auto, HOST:PORT, ray://HOST:10001); default: start a local one.")] = None,
    workers: Annotated[Optional[int], typer.Option(help="--engine ray: scoring actors, each loading the judge once (default: one per GPU, else one per 2 CPUs).")] = None,
    skip_invalid: SkipInvalid = False,
    format_: Format = None,
    benchmark_data: BenchmarkData = None,
    model_name: ModelName = None,
    report: Annotated[Optional[str], typer.Option(help="Also print and write the benchmark's own stats: vlsbench or mmsafetybench.")] = None,
    report_out: Annotated[Optional[Path], typer.Option(help="Where --report writes its JSON (default: REPORT_report.json).")] = None,
    write_back: Annotated[Optional[Path], typer.Option(help="Folder to rewrite the benchmark files into, with the judge's labels.")] = None,
    escalate_below: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Send responses with confidence below P to the teacher.")] = None,
    target_kappa: Annotated[Optional[float], typer.Option(min=-1.0, max=1.0, help="Escalate below the threshold `judge calibrate` chose for kappa K.")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="Teacher model for escalated responses (default: the one judge.json records for the judge's labels, else gpt-4o-2024-08-06).")] = None,
    prompt_file: Annotated[Optional[Path], typer.Option(help="Teacher prompt for escalated responses, with {question} and {response} (default: the built-in rubric the judge's labels were collected with; needed for a custom scheme).")] = None,
    base_url: BaseUrl = None,
    api_key: Annotated[Optional[str], typer.Option(help="Teacher API key (default: OPENAI_API_KEY). Never stored.")] = None,
    cache: Annotated[Path, typer.Option(help="Teacher cache (SQLite) shared with `judge collect`.")] = Path(DEFAULT_CACHE),
) -> None:
    """Label every response offline and print the benchmark's rates, overall and per model / category."""
    from judge.benchmark_reports import REPORTS, benchmark_report, format_report
    from judge.benchmark_reports import write_back as write_back_files
    from judge.evaluate import rate_summary
    from judge.model import probs_array
    from judge.records import read_records, write_jsonl
    from judge.report import format_rates
    from judge.score import open_judge, score_with_engine

    if report and report not in REPORTS:
        raise fail(InputError(f"unknown --report {report!r}: use one of {', '.join(REPORTS)}"))
    escalating = escalate_below is not None or target_kappa is not None
    report_out = (report_out or Path(f"{report}_report.json")) if report else None
    try:
        for path in (output, report_out):
            if path:
                check_writable(path)
        if write_back:
            check_writable(write_back, folder=True)
        judge = open_judge(judge_dir, engine)
        if escalating:  # what would stop escalation (cache, threshold, key, rubric) is refused before scoring
            from judge.cache import Cache
            from judge.escalate import escalation_teacher, prepare_escalation

            Cache(cache).close()
            teacher_config, warnings = escalation_teacher(judge, model=teacher, prompt_file=prompt_file,
                                                          base_url=base_url, api_key=api_key)
            threshold = prepare_escalation(judge, teacher_config, below=escalate_below, target_kappa=target_kappa)
            for warning in warnings:
                typer.echo(f"warning: {warning}", err=True)
        # Teacher labels only ride along here, in the files' own scheme (MM-SafetyBench verdicts can be
        # scored by a VLSBench judge); the judge's labels are always in its scheme.
        dataset = read_records(responses, format=format_, benchmark_data=benchmark_data, model_name=model_name,
                               skip_invalid=skip_invalid, prefer_scheme=judge.scheme)
        echo_skipped(dataset)
        rows, predictions = score_with_engine(judge, dataset.records, engine, batch_size=batch_size, address=address,
                                              workers=workers, progress=True)
    except InputError as exc:
        raise fail(exc) from None
    stopped, exit_code = None, 0  # escalation that did not finish: the scored rows are still written, then it is said
    if escalating:
        from judge.escalate import escalate_predictions, escalation_outcome, format_escalation, mark_not_escalated

        try:
            rows, predictions, stats = escalate_predictions(judge, dataset.records, predictions, teacher_config,
                                                            threshold, cache_path=cache, progress=True)
            typer.echo(format_escalation(stats), err=True)
            stopped, exit_code = escalation_outcome(stats, cache)
        except (InputError, KeyboardInterrupt) as exc:  # a second Ctrl-C aborts the teacher calls in flight
            due = mark_not_escalated(rows, predictions, threshold)
            stopped, exit_code = (exc, 1) if isinstance(exc, InputError) else ("interrupted", 130)
            stopped = (f"escalation stopped ({stopped}): the {due} responses below the threshold keep the student's "
                       f"label (judge_teacher_status not_sent); rerun to escalate them (answers already paid for are cached)")
    if output:
        write_jsonl(output, rows)
        typer.echo(f"wrote {len(rows)} scored responses to {output}", err=True)
    labels = [p.label for p in predictions]
    probs = probs_array(predictions, judge.scheme.classes)
    typer.echo(format_rates(rate_summary(dataset.records, labels, judge.scheme, probs=probs), judge.scheme.classes))
    try:
        if report:
            block = benchmark_report(report, dataset.records, labels, judge.scheme)
            report_out.write_text(json.dumps(block, indent=2), encoding="utf-8")
            typer.echo(f"\n{format_report(report, block)}\n({report} report written to {report_out})")
        if write_back:
            for path, counts in write_back_files(dataset.records, labels, judge.scheme, write_back).items():
                typer.echo(f"wrote {path}: {counts['relabelled']} relabelled, {counts['kept']} kept their label", err=True)
    except InputError as exc:
        raise fail(exc) from None
    if stopped:
        typer.secho(f"error: {stopped}", fg="red", err=True)
    if exit_code:
        raise typer.Exit(code=exit_code)


@app.command("eval")
def eval_(
    scored: Annotated[Path, typer.Argument(help="Scored JSONL from `judge score`.")],
    reference: Annotated[Optional[Path], typer.Option(help="JSONL with the teacher's labels (default: the scored file's own).")] = None,
    png: Annotated[Optional[Path], typer.Option(help="Where to draw the confusion matrices: X.png and X_normalized.png (default: SCORED.confusion.png).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report as JSON.")] = None,
    scheme: Scheme = None,
    format_: Format = None,
    benchmark_data: BenchmarkData = None,
    model_name: ModelName = None,
    as_: Annotated[Optional[str], typer.Option("--as", help="'binary': compare with safe/unsafe references through the scheme's safe mapping.")] = None,
    output_format: Annotated[str, typer.Option(help="How to print the report: text, json or markdown.")] = "text",
    html_out: Annotated[Optional[Path], typer.Option("--html", help="Also write one self-contained HTML report (tables and plots).")] = None,
) -> None:
    """Agreement of the judge with the teacher: kappa, accuracy, F1, confusion matrices, per group."""
    from judge.evaluate import evaluate, load_pairs
    from judge.report import REPORT_FORMATS, format_html, plot_confusions, render_report

    if output_format not in REPORT_FORMATS or as_ not in (None, "binary"):
        raise fail(InputError(f"use --output-format {'|'.join(REPORT_FORMATS)} and --as binary (got {output_format!r}, {as_!r})"))
    png = png or scored.with_suffix(".confusion.png")
    try:
        for path in (png, json_out, html_out):
            if path:
                check_writable(path)
        records, predicted, resolved, info, probs = load_pairs(str(scored), str(reference) if reference else None, scheme=scheme,
                                                        as_binary=as_ == "binary", format=format_,
                                                        benchmark_data=benchmark_data, model_name=model_name)
    except InputError as exc:
        raise fail(exc) from None
    if not records:
        raise fail(InputError("no scored response has a teacher label to compare with", path=reference or scored))
    report = evaluate(records, predicted, resolved, probs=probs)
    typer.echo(f"{info['paired']} paired responses ({info['unpaired_reference']} teacher labels had no scored response)", err=True)
    typer.echo(render_report(report, output_format))
    images = plot_confusions(report, png)
    typer.echo(f"confusion matrices drawn to {', '.join(map(str, images))}", err=True)
    if json_out:
        json_out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    if html_out:
        estimated = None
        if as_ is None:  # per-model rates with intervals, when the scored rows carry the student's probabilities
            from judge.estimate import estimate as run_estimate, forest_rows, load_inputs
            from judge.report import plot_forest
            try:
                estimated = run_estimate(load_inputs(scored, reference or scored, scheme=resolved))
                images.append(plot_forest(forest_rows(estimated), html_out.with_suffix(".forest.png"), rate_name=estimated["rate_name"]))
            except InputError as exc:
                typer.echo(f"no rate intervals in the HTML report: {exc}", err=True)
        html_out.write_text(format_html(report, images, estimate=estimated), encoding="utf-8")
        typer.echo(f"HTML report written to {html_out}", err=True)


@app.command()
def estimate(
    scored: Annotated[Path, typer.Argument(help="Scored JSONL from `judge score` (every row, with judge_probs).")],
    teacher: Annotated[Path, typer.Option("--teacher", "-t", help="Teacher labels for a random sample of those rows (joined on id), e.g. from `judge collect --sample N --per model`.")],
    judge_dir: Annotated[Optional[Path], typer.Option("--judge", "-j", help="The judge that scored them: refuses teacher rows it was trained on.")] = None,
    by: Annotated[str, typer.Option(help="Comma-separated fields to estimate per (first one also gets paired differences), e.g. model,category.")] = "model",
    alpha: Annotated[float, typer.Option(help="Error level: 0.05 gives 95% intervals.")] = 0.05,
    target_width: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="Also say how many teacher labels per group an interval this wide (e.g. 0.1 = 10 points) needs.")] = None,
    png: Annotated[Optional[Path], typer.Option(help="Forest plot of the estimates (default: beside SCORED, *.forest.png).")] = None,
    scheme: Scheme = None,
    output_format: Annotated[str, typer.Option(help="text, json or markdown.")] = "text",
) -> None:
    """The teacher's rates per model from the student's scores plus a teacher sample (PPI++), with 95% intervals."""
    from judge.estimate import estimate as run_estimate
    from judge.estimate import forest_rows, load_inputs
    from judge.report import REPORT_FORMATS, plot_forest, render_estimate

    if output_format not in REPORT_FORMATS:
        raise fail(InputError(f"use --output-format {'|'.join(REPORT_FORMATS)} (got {output_format!r})"))
    png = png or scored.with_suffix(".forest.png")
    try:
        check_writable(png)
        result = run_estimate(load_inputs(scored, teacher, scheme=scheme, judge_dir=judge_dir),
                              by=[f.strip() for f in by.split(",") if f.strip()], alpha=alpha, target_width=target_width)
    except InputError as exc:
        raise fail(exc) from None
    typer.echo(render_estimate(result, output_format))
    image = plot_forest(forest_rows(result), png, rate_name=result["rate_name"],
                        level=f"{100 * (1 - alpha):.0f}%")
    typer.echo(f"forest plot drawn to {image}", err=True)


@app.command()
def calibrate(
    calib: Annotated[Path, typer.Argument(help="JSONL of teacher-labelled responses kept apart from training.")],
    judge_dir: Annotated[Path, typer.Option("--judge", "-j", help="Artifact folder; its judge.json gets the temperature and threshold.")],
    png: Annotated[Optional[Path], typer.Option(help="Reliability diagram (default: JUDGE/reliability.png).")] = None,
    target_kappa: Annotated[float, typer.Option(min=-1.0, max=1.0, help="Kappa with the teacher the escalation threshold must reach.")] = 0.9,
    cost_per_call: Annotated[float, typer.Option(min=0.0, help="Teacher cost per call (USD), for the savings estimate.")] = 0.005,
    skip_invalid: SkipInvalid = False,
) -> None:
    """Fit temperature scaling (ECE, Brier, reliability diagram) and choose the escalation threshold."""
    from judge.calibrate import calibrate as fit_calibration
    from judge.calibrate import format_calibration
    from judge.escalate import escalation_plan, format_plan

    png = png or judge_dir / "reliability.png"
    try:
        judge, dataset = judge_and_labels(judge_dir, calib, skip_invalid)
        for path in (png, judge_dir / "judge.json"):  # both written after the fit
            check_writable(path)
        logits = judge.logits(dataset.records, progress=True)
        result = fit_calibration(judge, dataset.records, logits=logits, source=calib, png=png)
        plan = escalation_plan(judge, dataset.records, target_kappa, logits=logits, cost_per_call=cost_per_call, source=calib)
    except InputError as exc:
        raise fail(exc) from None
    judge.save_meta()
    saved = "temperature and threshold" if result["applied"] else "threshold"
    typer.echo(f"{format_calibration(result)}\n\n{format_plan(plan)}\n\n{saved} saved in {judge_dir}")


@app.command()
def drift(
    labels: Annotated[Path, typer.Argument(help="JSONL of fresh teacher labels (a new benchmark or new models).")],
    judge_dir: Annotated[Path, typer.Option("--judge", "-j", help="Artifact folder from `judge distill`.")],
    skip_invalid: SkipInvalid = False,
) -> None:
    """Is the judge still within the agreement measured at training time? Kappa with its interval on new labels."""
    from judge.calibrate import drift as check_drift
    from judge.calibrate import format_drift

    try:
        judge, dataset = judge_and_labels(judge_dir, labels, skip_invalid)
        result = check_drift(judge, dataset.records)
    except InputError as exc:
        raise fail(exc) from None
    typer.echo(format_drift(result))
    if result["verdict"] == "DEGRADED":
        raise typer.Exit(code=2)


@app.command()
def card(
    judge_dir: Annotated[Path, typer.Option("--judge", "-j", help="Artifact folder from `judge distill`.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the card here (default: print it).")] = None,
) -> None:
    """Write the artifact's MODEL_CARD.md from its measured numbers."""
    from judge.card import render_card

    try:
        if output:
            check_writable(output)
        text = render_card(judge_dir)
    except InputError as exc:
        raise fail(exc) from None
    if output:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"model card written to {output}", err=True)
    else:
        typer.echo(text)


@app.command()
def info(
    judge_dir: Annotated[Path, typer.Argument(help="Artifact folder from `judge distill`.")],
    output_format: Annotated[str, typer.Option(help="text or json.")] = "text",
) -> None:
    """What a judge is: student, backbone, scheme, teacher, rows trained on, agreement, calibration."""
    from judge.card import artifact_info, format_info

    try:
        summary = artifact_info(judge_dir)
    except InputError as exc:
        raise fail(exc) from None
    typer.echo(json.dumps(summary, indent=2) if output_format == "json" else format_info(summary))


@app.command()
def serve(
    judge_dir: Annotated[Path, typer.Option("--judge", "-j", help="Artifact folder from `judge distill`.")],
    host: Annotated[str, typer.Option(help="Address to bind; the default keeps the judge on this machine.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(envvar="JUDGE_API_KEY", help="Require this bearer token on every request.")] = None,
    log_content: Annotated[bool, typer.Option("--log-content", help="Also log prompts and responses (default: labels and timings only).")] = False,
    pattern: Annotated[list[str], typer.Option("--pattern", help="Regex with named groups question / response for your own judge template (repeatable).")] = [],
    name: Annotated[Optional[str], typer.Option(help="Model name to serve (GET /v1/models; VLMEvalKit's LOCAL_LLM); default: the artifact's name.")] = None,
) -> None:
    """Serve the judge as an OpenAI-compatible endpoint: point OPENAI_BASE_URL at http://HOST:PORT/v1."""
    from judge.serve import serve as run_server

    try:
        run_server(judge_dir, host=host, port=port, api_key=api_key, log_content=log_content, patterns=pattern,
                   name=name)
    except InputError as exc:
        raise fail(exc) from None


if __name__ == "__main__":
    app()
