"""Every command that reads input answers a malformed file with one line naming the file (and line)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import judge.textio
from judge.cli import app
from tests.tiny import synthetic_rows, write_jsonl

runner = CliRunner()
GOOD = '{"id": "a", "response": "I cannot help with that.", "label": "refuse"}'
LONG_LINE_LIMIT = 256 << 10  # the real limit is 16 MiB; the rule is the same at any size (and nesting stays under it)

CORPUS: dict[str, bytes] = {
    "empty.jsonl": b"",
    "blank_lines.jsonl": b"\n \n\t\n",
    "latin1.jsonl": '{"id": "a", "response": "caf\xe9", "label": "refuse"}\n'.encode("latin-1"),
    "utf16.jsonl": (GOOD + "\n").encode("utf-16"),
    "random_bytes.jsonl": bytes(range(256)) * 8,
    "truncated.jsonl": b'{"id": "a", "response": "unfinished\n',
    "nul_byte.jsonl": b'{"id": "a", "response": "a\x00b", "label": "refuse"}\n',
    "deeply_nested.jsonl": b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "not_an_object.jsonl": b"[1, 2, 3]\n",
    "nested_response.jsonl": b'{"id": "a", "response": {"text": ["x"]}, "label": "refuse"}\n',
    "lone_surrogate.jsonl": b'{"id": "a", "response": "\\ud800", "label": "refuse"}\n',
    "huge_line.jsonl": b'{"id": "a", "response": "' + b"x" * (2 * LONG_LINE_LIMIT) + b'", "label": "refuse"}\n',
    "latin1.csv": 'id,response,label\na,caf\xe9,refuse\n'.encode("latin-1"),
    "no_response.csv": b'id,text\na,"unterminated\n',
    "wrong_shape.json": b'{"logs": 5}',
    "deeply_nested.json": b"[" * 100_000 + b"]" * 100_000,
    "latin1.json": '{"logs": [{"id": 1, "pred_answer": "caf\xe9"}]}'.encode("latin-1"),
}


def commands(path: str, judge_dir: str, out: str) -> dict[str, list[str]]:
    return {
        "score": ["score", path, "--judge", judge_dir],
        "distill": ["distill", path, "--student", "lexical", "--out", out],
        "eval": ["eval", path],
        "collect": ["collect", path, "--dry-run"],
        "calibrate": ["calibrate", path, "--judge", judge_dir],
        "drift": ["drift", path, "--judge", judge_dir],
    }


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malformed_file_is_one_line_through_every_command(name, lexical_judge, tmp_path, monkeypatch):
    monkeypatch.setattr(judge.textio, "MAX_LINE_BYTES", LONG_LINE_LIMIT)
    path = tmp_path / name
    path.write_bytes(CORPUS[name])
    for command, args in commands(str(path), lexical_judge, str(tmp_path / "run")).items():
        result = runner.invoke(app, args)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (command, result.output)
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), (command, result.output)
    assert not (tmp_path / "run").exists()


def test_what_each_malformed_file_is_told(lexical_judge, tmp_path, monkeypatch):
    monkeypatch.setattr(judge.textio, "MAX_LINE_BYTES", LONG_LINE_LIMIT)
    expected = {
        "empty.jsonl": ": 0 responses read",
        "latin1.jsonl": ":1: not UTF-8 text (byte 0xe9 at column 29)",
        "utf16.jsonl": ":1: UTF-16 text: convert the file to UTF-8",
        "deeply_nested.jsonl": ":1: JSON nested too deeply",
        "lone_surrogate.jsonl": ":1: holds a lone surrogate escape",
        "huge_line.jsonl": f":1: line longer than {LONG_LINE_LIMIT:,} bytes",
        "latin1.csv": ":2: not UTF-8 text",
        "latin1.json": ":1: not UTF-8 text",
    }
    for name, message in expected.items():
        path = tmp_path / name
        path.write_bytes(CORPUS[name])
        result = runner.invoke(app, ["score", str(path), "--judge", lexical_judge])
        assert f"error: {path}{message}" in result.output, result.output


def test_all_lines_skipped_says_so_and_fails(lexical_judge, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a"}\nnot json\n')
    result = runner.invoke(app, ["score", str(path), "--judge", lexical_judge, "--skip-invalid"])
    assert result.exit_code == 1
    assert f"error: {path}: 0 responses read (2 lines skipped, the first: {path}:1: no response field" in result.output


def test_utf8_bom_and_long_csv_fields_are_read(lexical_judge, tmp_path):
    """Spreadsheet exports start with a byte-order mark and may hold responses past csv's 128 KiB default."""
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in synthetic_rows(3, with_labels=False)).encode())
    long_csv = tmp_path / "long.csv"
    long_csv.write_text("id,response\na," + "word " * 40_000 + "\n", encoding="utf-8-sig")
    for path in (bom, long_csv):
        result = runner.invoke(app, ["score", str(path), "--judge", lexical_judge, "-o", str(tmp_path / "out.jsonl")])
        assert result.exit_code == 0, result.output
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1


def test_valid_file_after_bad_one_is_not_half_read(lexical_judge, tmp_path):
    """A bad file among good ones stops before anything is scored or written."""
    good = write_jsonl(tmp_path / "good.jsonl", synthetic_rows(3, with_labels=False))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe\n")
    out = tmp_path / "scored.jsonl"
    result = runner.invoke(app, ["score", str(good), str(bad), "--judge", lexical_judge, "-o", str(out)])
    assert result.exit_code == 1 and f"error: {bad}:1:" in result.output and not out.exists()


def one_line_error(result, path) -> bool:
    """Exit 1 and one line, `error: PATH...` (beside the summary of the input read, where it was read first)."""
    lines = [line for line in result.output.splitlines() if line.strip() and " lines read, " not in line]
    return (result.exit_code == 1 and isinstance(result.exception, SystemExit) and len(lines) == 1
            and lines[0].startswith(f"error: {path}"))


def test_unwritable_output_paths_are_refused_before_any_work(lexical_judge, tmp_path):
    """A folder where a file goes, a file where a folder goes, a file as a parent folder: one line, nothing written."""
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(60))
    scored = tmp_path / "scored.jsonl"
    assert runner.invoke(app, ["score", str(labels), "-j", lexical_judge, "-o", str(scored)]).exit_code == 0
    folder, file = tmp_path / "folder", tmp_path / "file.txt"
    folder.mkdir()
    file.write_text("keep me")
    before = sorted(tmp_path.rglob("*"))
    cases = [
        (["distill", str(labels), "--student", "lexical", "--out", str(file)], file),
        (["distill", str(labels), "--student", "lexical", "--out", str(file / "judge")], file / "judge"),
        (["score", str(labels), "-j", lexical_judge, "-o", str(folder)], folder),
        (["score", str(labels), "-j", lexical_judge, "--report", "vlsbench", "--report-out", str(folder)], folder),
        (["score", str(labels), "-j", lexical_judge, "--write-back", str(file)], file),
        (["eval", str(scored), "--png", str(file / "c.png")], file / "c.png"),
        (["eval", str(scored), "--json", str(folder)], folder),
        (["eval", str(scored), "--html", str(folder)], folder),
        (["estimate", str(scored), "--teacher", str(labels), "--png", str(folder)], folder),
        (["calibrate", str(labels), "-j", lexical_judge, "--png", str(folder)], folder),
        (["card", "-j", lexical_judge, "-o", str(folder)], folder),
    ]
    for args, path in cases:
        result = runner.invoke(app, args)
        assert one_line_error(result, path), (args, result.output)
    assert sorted(tmp_path.rglob("*")) == before and file.read_text() == "keep me"


@pytest.mark.parametrize("content", [b"{bad", b"", b'{"format_version": 1, "kind": "lex', b"[]", b"\xff\xfe\xff",
                                     b'{"format_version": 1, "scheme": {"name": "x", "labels": []}, "view": "full"}',
                                     b'{"format_version": 1, "kind": "lexical", "view": "full"}'])
def test_a_damaged_judge_json_is_one_line(content, tmp_path):
    (tmp_path / "judge.json").write_bytes(content)
    responses = write_jsonl(tmp_path / "r.jsonl", synthetic_rows(3, with_labels=False))
    for args in (["info", str(tmp_path)], ["score", str(responses), "-j", str(tmp_path)], ["serve", "-j", str(tmp_path)]):
        result = runner.invoke(app, args)
        assert one_line_error(result, tmp_path / "judge.json"), (args, result.output)
        assert "not a valid judge artifact (" in result.output


@pytest.mark.parametrize("kind, needs", [("ensemble", "members"), ("probe", "probe, backbone, max_length"),
                                         ("transformer", "max_length, backbone")])
def test_a_judge_json_without_what_its_backend_reads_is_one_line(kind, needs, lexical_judge, tmp_path):
    """A hand-edited judge.json whose kind needs keys it lacks ended in a KeyError traceback from the backend."""
    folder = shutil.copytree(lexical_judge, tmp_path / "judge")
    meta = json.loads((folder / "judge.json").read_text())
    meta = {key: value for key, value in meta.items() if key not in needs.split(", ")}
    (folder / "judge.json").write_text(json.dumps({**meta, "kind": kind}))
    responses = write_jsonl(tmp_path / "r.jsonl", synthetic_rows(3, with_labels=False))
    result = runner.invoke(app, ["score", str(responses), "-j", str(folder)])
    assert one_line_error(result, folder / "judge.json"), result.output
    assert f"not a valid judge artifact (no {needs} for a {kind} judge)" in result.output


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


DAMAGES = {"cut": _cut, "empty": lambda data: b"", "not_a_zip": lambda data: bytes(range(256)) * 4,
           "zeroed_tail": lambda data: data[:-4096] + bytes(4096)}  # a copy cut short, or never done


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_model_skops_is_one_line_saying_what_to_do(damage, lexical_judge, tmp_path):
    """A model.skops cut short was a zipfile.BadZipFile traceback from every command that loads the judge."""
    judge_dir = shutil.copytree(lexical_judge, tmp_path / "judge")
    model = judge_dir / "model.skops"
    model.write_bytes(DAMAGES[damage](model.read_bytes()))
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(20))
    for args in (["score", str(labels), "-j", str(judge_dir)], ["calibrate", str(labels), "-j", str(judge_dir)],
                 ["serve", "-j", str(judge_dir)]):
        result = runner.invoke(app, args)
        assert one_line_error(result, f"{model}: truncated or not a skops file ("), (args, repr(result.exception))
        assert result.output.rstrip().endswith("copy the judge folder again, or re-run `judge distill`"), result.output


@pytest.mark.parametrize("part, file", [("adapter", "adapter_model.safetensors"), ("adapter", "adapter_config.json"),
                                        ("tokenizer", "tokenizer.json")])
def test_a_damaged_transformer_artifact_is_one_line_naming_the_part(part, file, tiny_judge, tmp_path):
    """SafetensorError, JSONDecodeError tracebacks. (In this process the backbone's load bar shows beside the
    error: the CLI quiets it only before transformers is first imported.)"""
    judge_dir = shutil.copytree(tiny_judge, tmp_path / "judge")
    (judge_dir / part / file).write_bytes(_cut((judge_dir / part / file).read_bytes()))
    responses = write_jsonl(tmp_path / "r.jsonl", synthetic_rows(3, with_labels=False))
    result = runner.invoke(app, ["score", str(responses), "-j", str(judge_dir)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {judge_dir / part}: cannot load the "), result.output
    assert errors[0].endswith("copy the judge folder again, or re-run `judge distill`")


def test_escalation_refuses_a_broken_cache_before_scoring(lexical_judge, tmp_path):
    responses = write_jsonl(tmp_path / "r.jsonl", synthetic_rows(3, with_labels=False))
    cache = tmp_path / "cache.sqlite"
    cache.write_text("not an SQLite file " * 20)
    result = runner.invoke(app, ["score", str(responses), "-j", lexical_judge, "--escalate-below", "0.9",
                                 "--cache", str(cache), "-o", str(tmp_path / "out.jsonl")])
    assert one_line_error(result, cache) and "not a usable teacher cache" in result.output, result.output
    assert not (tmp_path / "out.jsonl").exists()


def test_escalation_that_cannot_run_is_refused_before_scoring(lexical_judge, tmp_path, monkeypatch):
    """No stored curve for --target-kappa, no API key: one line before the file is scored, not after it."""
    import judge.score

    def never(*args, **kwargs):
        raise AssertionError("scored before escalation was checked")

    monkeypatch.setattr(judge.score, "score_with_engine", never)
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    responses = write_jsonl(tmp_path / "r.jsonl", synthetic_rows(3, with_labels=False))
    out = tmp_path / "out.jsonl"
    for flags, error in ((["--target-kappa", "0.9"], f"{lexical_judge}: the judge has no escalation curve"),
                         (["--escalate-below", "0.9"], "no OpenAI API key: pass --api-key or set OPENAI_API_KEY")):
        result = runner.invoke(app, ["score", str(responses), "-j", lexical_judge, *flags,
                                     "--cache", str(tmp_path / "cache.sqlite"), "-o", str(out)])
        assert one_line_error(result, error), result.output
    assert not out.exists()


def test_drift_on_teacher_labels_of_one_class_gives_no_verdict(lexical_judge, tmp_path):
    """Kappa is 0 there however often the judge agrees (and undefined where it always does): no DEGRADED."""
    refusals = [{**row, "id": f"new{i}"} for i, row in enumerate(r for r in synthetic_rows(200) if r["label"] == "refuse")]
    for rows in (refusals[:2], refusals[:30]):
        labels = write_jsonl(tmp_path / f"{len(rows)}.jsonl", rows)
        result = runner.invoke(app, ["drift", str(labels), "-j", lexical_judge])
        assert one_line_error(result, f"{labels}: all {len(rows)} teacher labels are 'refuse'"), result.output
        assert "DEGRADED" not in result.output


def test_library_distill_refuses_an_unwritable_folder_before_training(tmp_path, monkeypatch):
    from judge.errors import InputError
    from judge.records import read_records
    from judge.training import distill

    def never(*args, **kwargs):
        raise AssertionError("trained before the output folder was checked")

    monkeypatch.setattr(distill, "run_portfolio", never)
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(60))
    with pytest.raises(InputError, match=f"^{labels}: is a file, not a folder to write into$"):
        distill.distill(read_records(labels), labels)


@pytest.mark.parametrize("n, holdout, message", [
    (60, "0.01", "holdout 0.01: no whole prompt group can be held out (1% of 60 labelled rows in 30 prompt groups)"),
    # the minimum was once checked before the holdout: a judge shipped fitted on fewer than 20 rows
    (24, "0.3", "only 18 labelled records left to train on: distillation needs at least 20 (holdout 0.3 took the other 6)"),
])
def test_a_holdout_that_leaves_nothing_to_test_or_too_little_to_train_is_one_line(tmp_path, n, holdout, message):
    labels = write_jsonl(tmp_path / "labels.jsonl", synthetic_rows(n))
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--holdout", holdout,
                                 "--out", str(tmp_path / "run")])
    assert one_line_error(result, f"{labels}: {message}"), result.output
    assert not (tmp_path / "run").exists()


def _relabelled(rows, **changes):
    return [dict(row, **{key: value(i, row) for key, value in changes.items()}) for i, row in enumerate(rows)]


@pytest.mark.parametrize("rows, options, message", [
    (synthetic_rows(19), [], "only 19 labelled records: distillation needs at least 20"),
    (_relabelled(synthetic_rows(60), label=lambda i, r: "refuse"), [],
     "every record has the same teacher label: nothing to learn"),
    (_relabelled(synthetic_rows(60), group=lambda i, r: "G0"), [], "only 1 prompt group: cross-validation needs at least 2"),
    (_relabelled(synthetic_rows(60, scheme="mmsafetybench"), label=lambda i, r: "unsafe" if i == 0 else "safe"), [],
     "class 'unsafe' has 1 labelled row(s) in 1 prompt group(s): too rare to cross-validate"),
    (_relabelled(synthetic_rows(60), group=lambda i, r: f"G{i % 2}"), ["--holdout", "0.5"],
     "only 1 prompt group in the training split (holdout 0.5 took 30 rows): cross-validation needs at least 2"),
])
def test_too_little_to_distil_is_one_line_naming_the_file(rows, options, message, tmp_path):
    """The counts are the file's, or, after a holdout, the training split's (they named no file)."""
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", *options, "--out", str(tmp_path / "run")])
    assert one_line_error(result, f"{labels}: {message}"), result.output
    assert not (tmp_path / "run").exists()
