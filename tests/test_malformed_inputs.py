"""Every command that reads input answers a malformed file with one line naming the file (and line)."""

from __future__ import annotations

import json

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


@pytest.fixture(scope="module")
def lexical_judge(tmp_path_factory) -> str:
    """A TF-IDF judge (seconds to train): what reads the files is the same for every student."""
    root = tmp_path_factory.mktemp("lexical-judge")
    labels = write_jsonl(root / "labels.jsonl", synthetic_rows(120))
    result = runner.invoke(app, ["distill", str(labels), "--student", "lexical", "--out", str(root / "judge")])
    assert result.exit_code == 0, result.output
    return str(root / "judge")


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
