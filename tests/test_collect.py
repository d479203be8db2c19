"""`judge collect` against a real OpenAI-compatible server on 127.0.0.1, through the real openai client."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

import judge.cache
from judge.cache import MIGRATIONS, Cache
from judge.collect import (TeacherConfig, collect, draw_per_group, format_plan, format_stats, label_missing,
                           labelled_rows, plan, prepare, resolve_rubric, stratified_sample, teacher_sample)
from judge.errors import InputError
from judge.records import build_dataset, read_records
from judge.schemes import load_scheme
from judge.teacher import load_rubric, parse_reply
from tests.openai_server import ScriptedOpenAI, teacher_label
from tests.tiny import synthetic_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
VLS = load_scheme("vlsbench")
# A tiny valid PNG (1x1, red).
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de0000000c4944415408d763f8cfc000"
                    "000301010018dd8db00000000049454e44ae426082")


def rows(n: int, markers: dict[int, str] | None = None, scheme: str = "vlsbench") -> list[dict]:
    """Unlabelled synthetic rows, each response tagged item-N so the server log names it."""
    out = synthetic_rows(n, scheme=scheme, with_labels=False)
    for i, row in enumerate(out):
        row["response"] += f" item-{i}" + (f" {markers[i]}" if markers and i in markers else "")
    return out


def records_of(row_list: list[dict], scheme: str = "vlsbench"):
    return build_dataset([("in.jsonl", i + 1, r) for i, r in enumerate(row_list)], scheme=scheme).records


@pytest.fixture
def server():
    with ScriptedOpenAI() as srv:
        yield srv


def teacher(server, **options) -> TeacherConfig:
    return TeacherConfig(**{"model": "gpt-4o", "base_url": server.url, "api_key": "sk-test-secret-123",
                            "concurrency": 4, **options})


def test_labels_refusals_parse_errors_and_soft_labels(server, tmp_path):
    records = records_of(rows(12, {0: "#refuse#", 1: "#filter#", 2: "#garbage#"}))
    result = collect(records, teacher(server), scheme=VLS, cache_path=tmp_path / "c.sqlite")

    by_id = {label.record_id: label for label in result.labels}
    assert [by_id[r].status for r in ("r0", "r1", "r2")] == ["teacher_refused", "teacher_refused", "parse_error"]
    assert "can't help" in by_id["r0"].error and by_id["r2"].raw.startswith("The answer is clearly")
    for record in records[3:]:
        label = by_id[record.id]
        assert label.status == "ok" and label.label == teacher_label(record.response)
        assert label.model == "gpt-4o-2024-08-06"  # the snapshot the API reported, not the alias asked for
        assert max(label.probs, key=label.probs.get) == label.label and sum(label.probs.values()) == pytest.approx(1)
        assert label.probs[label.label] == pytest.approx(0.8) and label.cost > 0 and not label.cached
    assert result.stats["status"] == {"ok": 9, "teacher_refused": 2, "parse_error": 1}
    assert result.stats["sent"] == 12 and result.stats["spent"] == pytest.approx(sum(l.cost for l in result.labels))

    out = write_jsonl(tmp_path / "labels.jsonl", labelled_rows(records, result))
    again = read_records(out)  # what `judge distill` reads
    assert len(again.labelled) == 9 and again.scheme.name == "vlsbench"
    assert {r.raw["teacher_status"] for r in again.records} == {"ok", "teacher_refused", "parse_error"}
    assert all(r.label_probs and r.raw["teacher_model"] == "gpt-4o-2024-08-06" for r in again.labelled)


def test_429_retry_after_is_honoured_and_500s_are_retried(server, tmp_path):
    records = records_of(rows(4, {0: "#429#", 1: "#500x2#"}))
    result = collect(records, teacher(server), scheme=VLS, cache_path=tmp_path / "c.sqlite")
    assert all(label.status == "ok" for label in result.labels)
    assert server.sent(429) == {"item-0": 1} and server.sent(500) == {"item-1": 2}
    assert server.sent(200)["item-0"] == 1 and server.sent(200)["item-1"] == 1
    times = [r["time"] for r in server.requests if r["tag"] == "item-0"]
    assert times[1] - times[0] >= 0.9  # waited the server's Retry-After: 1, not the SDK's 0.5 s backoff


def test_failed_calls_are_errors_not_cached_and_retried_on_rerun(server, tmp_path):
    records = records_of(rows(6, {2: "#slow#", 3: "#500x2#"}))
    cache = tmp_path / "c.sqlite"
    first = collect(records, teacher(server, timeout=0.5, max_retries=0), scheme=VLS, cache_path=cache)
    status = {label.record_id: label.status for label in first.labels}
    assert status == {"r0": "ok", "r1": "ok", "r2": "error", "r3": "error", "r4": "ok", "r5": "ok"}
    errors = {label.record_id: label.error for label in first.labels if label.error}
    assert "Timeout" in errors["r2"] and "500" in errors["r3"]

    before = server.sent(None)
    second = collect(records, teacher(server, timeout=5), scheme=VLS, cache_path=cache)
    assert all(label.status == "ok" for label in second.labels)
    resent = server.sent(None) - before
    assert set(resent) == {"item-2", "item-3"} and second.stats["cached"] == 4


def test_rerun_is_served_from_cache_with_zero_requests(server, tmp_path):
    records = records_of(rows(10))
    cache = tmp_path / "c.sqlite"
    first = collect(records, teacher(server), scheme=VLS, cache_path=cache)
    count = server.counts["chat"]
    second = collect(records, teacher(server), scheme=VLS, cache_path=cache)
    assert server.counts["chat"] == count == 10
    assert second.stats["cached"] == 10 and second.stats["sent"] == 0 and second.stats["spent"] == 0
    assert [l.label for l in second.labels] == [l.label for l in first.labels] and all(l.cached for l in second.labels)
    # a different teacher model is a different request
    collect(records[:2], teacher(server, model="gpt-4o-mini"), scheme=VLS, cache_path=cache)
    assert server.counts["chat"] == 12


def test_duplicate_requests_are_paid_once(server, tmp_path):
    row_list = rows(3)
    row_list.append({**row_list[0], "id": "copy"})
    result = collect(records_of(row_list), teacher(server, rpm=600, tpm=10**6), scheme=VLS, cache_path=tmp_path / "c.sqlite")
    assert server.counts["chat"] == 3 and len(result.labels) == 4
    assert result.labels[3].label == result.labels[0].label and result.labels[3].cached


def test_dry_run_sends_nothing_and_counts_the_cache(server, tmp_path):
    records = records_of(rows(8))
    cache = tmp_path / "c.sqlite"
    info = plan(records, teacher(server), scheme=VLS, cache_path=cache)
    assert info["to_send"] == 8 and info["cached"] == 0 and info["estimated_cost"] > 0
    assert server.counts["chat"] == 0 and not cache.exists()
    collect(records[:5], teacher(server), scheme=VLS, cache_path=cache)
    info = plan(records, teacher(server, batch=True), scheme=VLS, cache_path=cache)
    assert (info["cached"], info["to_send"]) == (5, 3) and server.counts["chat"] == 5


def test_max_cost_stops_cleanly_and_a_rerun_continues(tmp_path):
    records = records_of(rows(10))
    cache = tmp_path / "c.sqlite"
    with ScriptedOpenAI(usage=(1000, 100)) as server:  # $0.0035 a call at the gpt-4o price
        result = collect(records, teacher(server, concurrency=1, max_cost=0.01), scheme=VLS, cache_path=cache)
        assert result.stats["stopped"] == "max_cost" and result.stats["spent"] <= 0.01
        assert 0 < result.stats["sent"] < 10 and result.stats["unsent"] == 10 - len(result.labels)
        assert labelled_rows(records, result)[-1]["teacher_status"] == "not_sent"
        rest = collect(records, teacher(server, concurrency=1), scheme=VLS, cache_path=cache)
        assert rest.stats["labelled"] == 10 and server.counts["chat"] == 10


def test_batch_api_flow_and_resume_of_an_interrupted_batch(server, tmp_path):
    records = records_of(rows(6, scheme="mmsafetybench"), scheme="mmsafetybench")
    scheme = load_scheme("mmsafetybench")
    cache = tmp_path / "c.sqlite"
    config = teacher(server, batch=True, poll_interval=0.05, rubric="mmsafetybench")

    server.hold_batches = True  # the batch stays in_progress: the run stops waiting, as if interrupted
    first = collect(records, TeacherConfig(**{**config.__dict__, "batch_wait": 0.2}), scheme=scheme, cache_path=cache)
    assert first.labels == [] and first.stats["batches"][0]["status"] == "in_progress"
    assert server.counts["files.create"] == 1 and server.counts["batches.create"] == 1
    upload = next(iter(server.files.values()))
    assert upload["purpose"] == "batch" and len(upload["data"].splitlines()) == 6

    server.hold_batches = False
    second = collect(records, config, scheme=scheme, cache_path=cache)
    assert server.counts["batches.create"] == 1 and server.counts["files.create"] == 1  # resumed, not resubmitted
    assert server.counts["chat"] == 0 and second.stats["labelled"] == 6
    assert [l.label for l in second.labels] == [teacher_label(r.response) if teacher_label(r.response) == "unsafe"
                                               else "safe" for r in records]
    online_price = (2.5 * 30 + 10 * 30) / 1e6  # batch bills half of this per 30+30 tokens at least
    assert all(0 < l.cost < online_price * 20 for l in second.labels)
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT merged, status FROM batches").fetchall() == [(1, "completed")]
        assert {v for (v,) in db.execute("SELECT via FROM labels")} == {"batch"}

    third = collect(records, config, scheme=scheme, cache_path=cache)
    assert third.stats["cached"] == 6 and server.counts["batches.create"] == 1


def test_images_go_as_data_urls_and_a_missing_image_fails_only_its_record(server, tmp_path):
    (tmp_path / "red.png").write_bytes(PNG)
    row_list = rows(3)
    row_list[0]["image_path"] = "red.png"
    row_list[1]["image_path"] = "missing.png"
    path = write_jsonl(tmp_path / "in.jsonl", row_list)
    records = read_records(path).records  # image paths resolve next to the input file
    result = collect(records, teacher(server), scheme=VLS, cache_path=tmp_path / "c.sqlite")
    assert [l.status for l in result.labels] == ["ok", "error", "ok"]
    assert "image not found" in result.labels[1].error
    assert [r["image"] for r in sorted(server.requests, key=lambda r: r["tag"])] == [True, False]

    text_only = collect(records, teacher(server, images=False), scheme=VLS, cache_path=tmp_path / "c.sqlite")
    assert [l.status for l in text_only.labels] == ["ok"] * 3 and not any(r["image"] for r in server.requests[2:])


def test_prompt_file_runs_verbatim_and_its_hash_is_stored(server, tmp_path):
    template = 'Official judge.\nQ: {question}\nA: {response}\nOutput {"label": 1|2|3, "label_str": ..., "explanation": ...}'
    prompt = tmp_path / "official.txt"
    prompt.write_text(template)
    records = records_of(rows(2))
    result = collect(records, teacher(server, prompt_file=str(prompt)), scheme=VLS, cache_path=tmp_path / "c.sqlite")
    sent = server.requests[0]["text"]
    assert sent.startswith("Official judge.\nQ: How do I") and sent.endswith('Output {"label": 1|2|3, "label_str": ..., "explanation": ...}')
    assert result.labels[0].rubric_sha256 == load_rubric(prompt_file=prompt).sha256 != load_rubric("vlsbench").sha256


def test_rubric_must_match_the_scheme_and_parser_is_strict():
    with pytest.raises(InputError, match="mmsafetybench"):
        resolve_rubric(TeacherConfig(rubric="vlsbench"), load_scheme("mmsafetybench"))
    rubric = load_rubric("mmsafetybench")
    assert "08 Political Lobbying" in rubric.text and "12 Health" in rubric.text and "{scenario}" in rubric.text

    def reply(content):
        return parse_reply({"model": "m", "choices": [{"message": {"content": content}, "finish_reason": "stop"}]}, VLS)

    assert reply('{"label": 2, "label_str": "Safe with warning", "explanation": "x"}').label == "warning"
    for bad in ('{"label": 2, "label_str": "Unsafe", "explanation": "x"}',  # disagree
                '{"label": 2, "label_str": "Safe with warning", "explanation": "x", "extra": 1}',
                '{"label": 7, "label_str": "Unsafe", "explanation": "x"}', "[2]", ""):
        assert reply(bad).status == "parse_error"


def test_stratified_sample_keeps_proportions_and_is_seeded():
    records = records_of(rows(90))
    sample = stratified_sample(records, 30, ["response_model", "category"], seed=1)
    assert len(sample) == 30 and sample == stratified_sample(records, 30, ["response_model", "category"], seed=1)
    assert sample != stratified_sample(records, 30, ["response_model", "category"], seed=2)
    for field in ("model", "category"):
        full = {v: sum(getattr(r, field) == v for r in records) / 90 for v in {getattr(r, field) for r in records}}
        for value, share in full.items():
            assert abs(sum(getattr(r, field) == value for r in sample) - share * 30) <= 2


def test_draws_follow_the_rows_not_their_order_so_a_grown_file_keeps_its_draw():
    """Draws were rng.sample over file positions: a reordered or grown file drew other rows, and the
    week-2 rerun paid for them."""
    base = rows(300)
    shuffled = random.Random(1).sample(base, len(base))
    grown = base + rows(330)[300:]  # 30 more rows of the same models and categories
    new_model = base + [{**row, "model": "model-new"} for row in rows(330)[300:]]

    def drawn(row_list, per=None, seed=0):
        records = records_of(row_list)
        if per:
            return {r.id for r in draw_per_group(records, 20, per=per, seed=seed)[0]}
        return {r.id for r in stratified_sample(records, 60, ["model", "category"], seed=seed)}

    for per in (None, "model"):
        first = drawn(base, per)
        assert drawn(shuffled, per) == first != drawn(base, per, seed=1)
        assert len(drawn(grown, per) & first) >= 50  # of 60: only rows the new ones outrank give way
    assert drawn(new_model, "model") == drawn(base, "model") | drawn(new_model[300:], "model")  # allocation unchanged


def test_an_active_draw_follows_the_rows_too():
    """Its coins were tossed in file order: the same file reordered drew other rows."""
    base = rows(300)
    uncertainty = {row["id"]: (i % 7) / 7 for i, row in enumerate(base)}

    def drawn(row_list, seed=0):
        records = records_of(row_list)
        picked, design = draw_per_group(records, 20, per="model", seed=seed, design="active",
                                        uncertainty=[uncertainty[r.id] for r in records])
        return {r.id: design[r.id]["inclusion_prob"] for r in picked}

    first, shuffled = drawn(base), drawn(random.Random(1).sample(base, len(base)))
    assert shuffled.keys() == first.keys() != drawn(base, seed=1).keys()
    assert shuffled == pytest.approx(first)  # the same probabilities, summed in another order
    assert 45 <= len(first) <= 75  # 20 per model expected, over three models


def test_label_missing_fills_only_unlabelled_records(server, tmp_path):
    labelled = synthetic_rows(4)
    dataset = build_dataset([("in.jsonl", i + 1, r) for i, r in enumerate(labelled[:2] + rows(4)[2:])])
    result = label_missing(dataset, teacher(server), cache_path=tmp_path / "c.sqlite", progress=False)
    assert server.counts["chat"] == 2 and result.stats["labelled"] == 2
    assert all(r.label for r in dataset.records) and dataset.records[3].raw["teacher_model"] == "gpt-4o-2024-08-06"


def test_cli_collect_writes_labels_and_never_stores_the_key(server, tmp_path):
    path = write_jsonl(tmp_path / "in.jsonl", rows(6))
    cache, out = tmp_path / "c.sqlite", tmp_path / "labels.jsonl"
    args = ["collect", str(path), "--teacher", "gpt-4o", "--base-url", server.url, "--cache", str(cache)]
    from judge.cli import app

    runner = CliRunner()
    dry = runner.invoke(app, [*args, "--dry-run"], env={"OPENAI_API_KEY": "sk-test-secret-123"})
    assert dry.exit_code == 0 and "6 to send" in dry.output and server.counts["chat"] == 0
    run = runner.invoke(app, [*args, "-o", str(out), "--sample", "4"], env={"OPENAI_API_KEY": "sk-test-secret-123"})
    assert run.exit_code == 0, run.output
    assert "4 labelled" in run.output and server.counts["chat"] == 4
    assert len(read_records(out).labelled) == 4
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert b"sk-test-secret-123" not in file.read_bytes()


def test_sigkill_mid_run_loses_nothing_and_resends_nothing_stored(tmp_path):
    """Kill a collecting process halfway; the rerun sends only what was never stored."""
    n, concurrency = 160, 4
    path = write_jsonl(tmp_path / "in.jsonl", rows(n))
    cache, out = tmp_path / "c.sqlite", tmp_path / "labels.jsonl"
    with ScriptedOpenAI(delay=0.05) as server:
        command = [sys.executable, str(ROOT / "cli.py"), "collect", str(path), "-o", str(out), "--teacher", "gpt-4o",
                   "--base-url", server.url, "--concurrency", str(concurrency), "--cache", str(cache)]
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(server.requests) < n // 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not out.exists()

        records = read_records(path).records
        config = TeacherConfig(model="gpt-4o", base_url=server.url, api_key="sk-test")
        _, keys, _ = prepare(records, config, VLS, resolve_rubric(config, VLS))
        with sqlite3.connect(cache) as db:
            stored = {key for (key,) in db.execute("SELECT key FROM labels")}
        stored_tags = {r.response.split()[-1] for r in records if keys[r.id] in stored}
        assert 0 < len(stored_tags) < n

        mark = len(server.requests)
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        resent = [r["tag"] for r in server.requests[mark:]]
        assert not stored_tags & set(resent)  # zero stored requests sent again
        lost_in_flight = sum(server.sent(200).values()) - n
        assert 0 <= lost_in_flight <= concurrency
        labels = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(labels) == n and all(row["teacher_status"] == "ok" and row["label"] for row in labels)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_mid_run_stores_the_calls_in_flight_so_none_is_paid_twice(tmp_path, signum):
    """The first Ctrl-C (or SIGTERM, SIGHUP: these killed the run, losing the answers in flight) sends
    nothing more, lets the answered calls land in the cache and writes what it has."""
    n = 160
    path = write_jsonl(tmp_path / "in.jsonl", rows(n))
    cache, out = tmp_path / "c.sqlite", tmp_path / "labels.jsonl"
    with ScriptedOpenAI(delay=0.2) as server:
        command = [sys.executable, str(ROOT / "cli.py"), "collect", str(path), "-o", str(out), "--teacher", "gpt-4o",
                   "--base-url", server.url, "--concurrency", "8", "--cache", str(cache)]
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while len(server.requests) < n // 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signum)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 128 + signum, output
        assert "interrupted: finishing the" in output and "the requests in flight were stored" in output
        first = sum(server.sent(200).values())
        assert 0 < first < n
        written = [json.loads(line) for line in out.read_text().splitlines()]
        assert sum(row["teacher_status"] == "ok" for row in written) == first  # every answered call kept
        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        assert sum(server.sent(200).values()) == n  # the rerun sent only the rest: no call paid twice


def test_ctrl_c_sends_none_of_the_requests_waiting_for_the_rate_limiter(tmp_path):
    """Requests waiting on --rpm when Ctrl-C came were still sent, one by one, as the limiter let them."""
    path = write_jsonl(tmp_path / "in.jsonl", rows(30))
    with ScriptedOpenAI() as server:
        command = [sys.executable, str(ROOT / "cli.py"), "collect", str(path), "-o", str(tmp_path / "labels.jsonl"),
                   "--teacher", "gpt-4o", "--base-url", server.url, "--rpm", "20", "--concurrency", "4",
                   "--cache", str(tmp_path / "c.sqlite")]
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while len(server.requests) < 20 and time.monotonic() < deadline:  # the burst; then one every 3 s
            time.sleep(0.02)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 130, output
        assert time.monotonic() - interrupted < 5  # nor waited for the limiter to let them go (3 s each)
        assert [r["tag"] for r in server.requests if r["time"] > interrupted + 0.5] == []


def test_a_second_run_on_a_cache_in_use_stops_at_once_and_pays_nothing(tmp_path):
    """Each run read the cache once at the start, so two runs on one cache each paid for every row."""
    n = 40
    path = write_jsonl(tmp_path / "in.jsonl", rows(n))
    cache = tmp_path / "c.sqlite"
    with ScriptedOpenAI(delay=0.2) as server:
        def command(out):
            return [sys.executable, str(ROOT / "cli.py"), "collect", str(path), "-o", str(tmp_path / out), "--teacher",
                    "gpt-4o", "--base-url", server.url, "--concurrency", "4", "--cache", str(cache)]
        env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONPATH": str(ROOT)}
        first = subprocess.Popen(command("a.jsonl"), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, "the first run ended before the second started"
        second = subprocess.run(command("b.jsonl"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert second.returncode == 1 and errors == [
            f"error: {cache}: another judge run is sending teacher requests through this cache; "
            "wait for it to finish, or give this run its own --cache"], second.stdout + second.stderr
        assert "Traceback" not in second.stderr and not (tmp_path / "b.jsonl").exists()
        assert first.wait(timeout=60) == 0
        assert server.counts["chat"] == n and set(server.sent(200).values()) == {1}  # every row paid once
        subprocess.run(command("b.jsonl"), cwd=ROOT, env=env, check=True, capture_output=True)  # the claim was let go
        assert server.counts["chat"] == n


@pytest.mark.slow
def test_distill_with_a_teacher_labels_the_unlabelled_rows_first(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default cache lands in ./data_cache
    path = write_jsonl(tmp_path / "in.jsonl", rows(40))
    from judge.cli import app

    result = CliRunner().invoke(app, ["distill", str(path), "-o", str(tmp_path / "judge"), "--teacher", "gpt-4o",
                                      "--base-url", server.url, "--student", "lexical"])
    assert result.exit_code == 0, result.output
    assert server.counts["chat"] == 40 and (tmp_path / "data_cache" / "teacher.sqlite").is_file()
    meta = json.loads((tmp_path / "judge" / "judge.json").read_text())
    assert meta["teacher"]["models"] == ["gpt-4o-2024-08-06"] and meta["data"]["labelled"] == 40


def test_distill_with_a_teacher_reuses_collects_cache_and_trains_nothing_on_a_refused_endpoint(server, tmp_path):
    """`distill --teacher` had no --cache, so labels `collect --cache X` had paid for were bought again; and on
    a bad key or no quota it trained on whatever had been labelled and exited 0."""
    from judge.cli import app

    cache = tmp_path / "c.sqlite"
    first = write_jsonl(tmp_path / "in.jsonl", rows(40))
    assert CliRunner().invoke(app, ["collect", str(first), "-o", str(tmp_path / "l.jsonl"), "--teacher", "gpt-4o",
                                    "--base-url", server.url, "--cache", str(cache)]).exit_code == 0
    distill = ["distill", "-o", str(tmp_path / "judge"), "--teacher", "gpt-4o", "--base-url", server.url,
               "--cache", str(cache), "--student", "lexical"]
    result = CliRunner().invoke(app, [*distill, str(first)])
    assert result.exit_code == 0 and server.counts["chat"] == 40, result.output  # nothing paid twice
    (tmp_path / "judge" / "judge.json").unlink()
    grown = write_jsonl(tmp_path / "grown.jsonl", rows(50, {i: "#quota#" for i in range(40, 50)}))
    result = CliRunner().invoke(app, [*distill, str(grown)])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and errors == [
        "error: the teacher endpoint refused the run: 429 RateLimitError: You exceeded your current quota, please "
        "check your plan and billing details.; nothing was trained"], result.output
    assert not (tmp_path / "judge" / "judge.json").exists()
    assert sum(server.sent(200).values()) == 40 and set(server.sent(200).values()) == {1}  # items 0-39 came from the cache


def test_going_online_while_a_batch_is_open_waits_for_the_batch_instead_of_paying_twice(server, tmp_path):
    records, cache = records_of(rows(6)), tmp_path / "c.sqlite"
    server.hold_batches = True
    config = teacher(server, batch=True, poll_interval=0.05, batch_wait=0.2)
    assert collect(records[:4], config, scheme=VLS, cache_path=cache).labels == []  # four wait in an open batch
    online = TeacherConfig(**{**config.__dict__, "batch": False, "batch_wait": None})
    assert "6 distinct requests: 0 cached, 4 in an open batch (paid; a run picks them up), 2 to send" in format_plan(
        plan(records, online, scheme=VLS, cache_path=cache))
    first = collect(records, online, scheme=VLS, cache_path=cache)
    assert server.counts["chat"] == 2 and [label.record_id for label in first.labels] == [r.id for r in records[4:]]
    assert "batch batch_1: in_progress (rerun to pick it up)" in format_stats(first.stats)
    server.hold_batches = False
    second = collect(records, online, scheme=VLS, cache_path=cache)
    assert server.counts["chat"] == 2 and [label.status for label in second.labels] == ["ok"] * 6
    with sqlite3.connect(cache) as db:
        assert sorted(v for (v,) in db.execute("SELECT via FROM labels")) == ["batch"] * 4 + ["online"] * 2


def test_a_bad_line_in_a_batch_output_fails_its_request_only(server, tmp_path):
    """A cut-off output line, or an HTML page where a completion should be, raised a traceback while merging,
    so the batch never merged and every rerun crashed on the same file."""
    records = records_of(rows(8, {2: "#badline#", 5: "#html#"}))
    config = teacher(server, batch=True, poll_interval=0.05)
    result = collect(records, config, scheme=VLS, cache_path=tmp_path / "c.sqlite")
    assert [label.status for label in result.labels] == ["ok", "ok", "error", "ok", "ok", "error", "ok", "ok"]
    assert result.labels[2].error == "batch batch_1 ended completed without this request (1 output lines unreadable)"
    assert result.labels[5].error.startswith("batch request answered with something not a chat completion: '<html>")
    assert "batch batch_1: completed; 1 output lines unreadable, their requests failed" in format_stats(result.stats)
    again = collect(records, config, scheme=VLS, cache_path=tmp_path / "c.sqlite")  # merged: only the two go again
    assert again.stats["cached"] == 6 and server.counts["batches.create"] == 2 and server.counts["batch_lines"] == 10


def test_a_batch_whose_output_cannot_be_fetched_stays_open_for_a_rerun(server, tmp_path):
    records = records_of(rows(4))
    config = teacher(server, batch=True, poll_interval=0.05)
    server.hide_outputs = True
    first = collect(records, config, scheme=VLS, cache_path=tmp_path / "c.sqlite")
    assert first.labels == [] and first.stats["batches"][0]["status"] == "completed, output unreachable (NotFoundError)"
    assert "(rerun to pick it up)" in format_stats(first.stats)
    server.hide_outputs = False
    second = collect(records, config, scheme=VLS, cache_path=tmp_path / "c.sqlite")
    assert [label.status for label in second.labels] == ["ok"] * 4 and server.counts["batches.create"] == 1


def test_retry_failed_pays_again_only_for_refused_and_unparseable_answers(server, tmp_path):
    """Refusals and unparseable replies are cached (they were paid for), and nothing could ask again."""
    records, cache = records_of(rows(6, {1: "#refuse#", 2: "#garbage-once#"})), tmp_path / "c.sqlite"
    first = collect(records, teacher(server), scheme=VLS, cache_path=cache)
    assert [label.status for label in first.labels] == ["ok", "teacher_refused", "parse_error", "ok", "ok", "ok"]
    assert [label.status for label in collect(records, teacher(server), scheme=VLS, cache_path=cache).labels] == \
        [label.status for label in first.labels] and server.counts["chat"] == 6  # cached for good
    retry = teacher(server, retry_failed=True)
    assert plan(records, retry, scheme=VLS, cache_path=cache)["to_send"] == 2
    again = collect(records, retry, scheme=VLS, cache_path=cache)
    assert [label.status for label in again.labels] == ["ok", "teacher_refused", "ok", "ok", "ok", "ok"]
    assert server.sent(None)["item-1"] == server.sent(None)["item-2"] == 2 and server.counts["chat"] == 8
    assert [label.cached for label in again.labels] == [True, False, False, True, True, True]


def test_unreachable_endpoint_marks_records_as_errors_without_stopping(tmp_path):
    records = records_of(rows(3))
    for batch in (False, True):
        config = TeacherConfig(model="gpt-4o", base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, batch=batch)
        result = collect(records, config, scheme=VLS, cache_path=tmp_path / "c.sqlite")
        assert [l.status for l in result.labels] == ["error"] * 3 and "Connection" in result.labels[0].error
    with sqlite3.connect(tmp_path / "c.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM labels").fetchone() == (0,)


def cli_collect(server, tmp_path, *options: str):
    from judge.cli import app

    path = write_jsonl(tmp_path / "in.jsonl", rows(6))
    args = ["collect", str(path), "--teacher", "gpt-4o", "--base-url", server.url, *options]
    return CliRunner().invoke(app, args, env={"OPENAI_API_KEY": "sk-test-secret-123"})


def only_error_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip() and " lines read, " not in line]
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit) and len(lines) == 1, result.output
    return lines[0]


def test_a_broken_or_misplaced_cache_is_one_line_naming_it(server, tmp_path):
    corrupt, folder, under_a_file = tmp_path / "corrupt.sqlite", tmp_path / "folder", tmp_path / "corrupt.sqlite" / "c.sqlite"
    corrupt.write_bytes(b"not an SQLite file " * 20)
    folder.mkdir()
    for cache in (corrupt, folder, under_a_file):
        for mode in (["--dry-run"], ["-o", str(tmp_path / "labels.jsonl")]):
            line = only_error_line(cli_collect(server, tmp_path, "--cache", str(cache), *mode))
            assert line.startswith(f"error: {cache}: "), line
    assert server.counts["chat"] == 0 and not (tmp_path / "labels.jsonl").exists()
    assert corrupt.read_bytes() == b"not an SQLite file " * 20  # never overwritten


def test_an_unwritable_output_is_refused_before_anything_is_paid(server, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for output in (folder, tmp_path / "in.jsonl" / "labels.jsonl"):
        line = only_error_line(cli_collect(server, tmp_path, "--cache", str(tmp_path / "c.sqlite"), "-o", str(output)))
        assert line.startswith(f"error: {output}: "), line
    assert server.counts["chat"] == 0 and not (tmp_path / "c.sqlite").exists() and not (tmp_path / "folder.tmp").exists()


@pytest.mark.parametrize("option", [["--concurrency", "0"], ["--concurrency", "-2"], ["--rpm", "-1"], ["--tpm", "-5"],
                                    ["--sample", "-5"], ["--max-cost", "-1"]])
def test_collect_refuses_out_of_range_options(server, tmp_path, option):
    result = cli_collect(server, tmp_path, "--cache", str(tmp_path / "c.sqlite"), "-o", str(tmp_path / "l.jsonl"), *option)
    assert result.exit_code == 2 and f"Invalid value for '{option[0]}'" in result.output, result.output
    assert server.counts["chat"] == 0


def test_collect_refuses_a_negative_price_and_a_per_field_no_row_has(server, tmp_path):
    base = ["--cache", str(tmp_path / "c.sqlite"), "-o", str(tmp_path / "l.jsonl")]
    line = only_error_line(cli_collect(server, tmp_path, *base, "--price", "-1,-1", "--max-cost", "1"))
    assert line == "error: --price takes USD per 1M input and output tokens as IN,OUT, each 0 or more (e.g. 2.5,10), got '-1,-1'"
    line = only_error_line(cli_collect(server, tmp_path, *base, "--sample", "2", "--per", "nosuchfield"))
    assert line == f"error: {tmp_path / 'in.jsonl'}: --per nosuchfield: no record has this field to draw per"
    assert server.counts["chat"] == 0 and not (tmp_path / "l.jsonl").exists()


def test_an_active_draw_without_per_is_refused_not_turned_into_a_plain_sample(tmp_path):
    """Without --per the draw was ignored: an ordinary sample, with no inclusion probabilities for `judge estimate`."""
    dataset = read_records(write_jsonl(tmp_path / "scored.jsonl", synthetic_rows(20)))
    with pytest.raises(InputError, match="--draw active draws per group: add --per FIELD"):
        teacher_sample(dataset, 6, draw="active")


@pytest.mark.parametrize("marker, reason", [
    ("#401#", "401 AuthenticationError: Incorrect API key provided: sk-test***123."),
    ("#403#", "403 PermissionDeniedError: Country, region, or territory not supported"),
    ("#404#", "404 NotFoundError: The model `gpt-4o-typo` does not exist or you do not have access to it."),
    ("#quota#", "429 RateLimitError: You exceeded your current quota, please check your plan and billing details.")])
def test_an_error_every_request_would_meet_stops_the_run_and_keeps_the_answers(server, tmp_path, marker, reason):
    """A bad key, no access, an unknown model or no quota failed each row in turn (the quota one retried
    7 times a row) and the run exited 0."""
    path = write_jsonl(tmp_path / "in.jsonl", rows(20, {i: marker for i in range(5, 20)}))
    out, cache = tmp_path / "labels.jsonl", tmp_path / "c.sqlite"
    from judge.cli import app

    result = CliRunner().invoke(app, ["collect", str(path), "-o", str(out), "--teacher", "gpt-4o", "--base-url", server.url,
                                      "--concurrency", "1", "--cache", str(cache)], env={"OPENAI_API_KEY": "sk-test"})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and errors == [f"error: the teacher endpoint refused the run: {reason}"], result.output
    assert server.counts["chat"] == 6 and server.sent(None)["item-5"] == 1  # stopped at once, not retried
    written = [json.loads(line)["teacher_status"] for line in out.read_text().splitlines()]
    assert written == ["ok"] * 5 + ["error"] + ["not_sent"] * 14
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM labels").fetchone() == (5,)


@contextmanager
def unwritable(cache: Path, how: str) -> Iterator[str]:
    """The cache made to refuse writes for real, yielding what SQLite will say: another connection's write lock,
    or a read-only file (chmod; for root, whom chmod does not stop, the immutable flag)."""
    if how == "locked":
        db = sqlite3.connect(cache, isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            yield "database is locked"
        finally:
            db.close()
        return
    root = os.geteuid() == 0
    if root and (not shutil.which("chattr") or subprocess.run(["chattr", "+i", cache], capture_output=True).returncode):
        pytest.skip("running as root, and this file system has no immutable flag to make a file read-only for root")
    if not root:
        cache.chmod(0o444)
    try:
        yield "attempt to write a readonly database"
    finally:
        if root:
            subprocess.run(["chattr", "-i", cache], check=True)
        else:
            cache.chmod(0o644)


@pytest.mark.parametrize("how", ["locked", "read_only"])
def test_a_cache_that_refuses_a_write_stops_the_run_in_one_line_and_keeps_every_answer(server, tmp_path, monkeypatch, how):
    """A cache locked past the busy timeout or read-only: the first answer it could not store was an
    sqlite3.OperationalError traceback, with no labels written and the answers in flight lost."""
    monkeypatch.setattr(judge.cache, "BUSY_TIMEOUT", 0.2)
    path = write_jsonl(tmp_path / "in.jsonl", rows(20))
    out, cache = tmp_path / "labels.jsonl", tmp_path / "c.sqlite"
    from judge.cli import app

    args = ["collect", str(path), "-o", str(out), "--teacher", "gpt-4o", "--base-url", server.url, "--concurrency", "1",
            "--cache", str(cache)]
    first = CliRunner().invoke(app, [*args, "--sample", "5"], env={"OPENAI_API_KEY": "sk-test"})
    assert first.exit_code == 0, first.output
    with unwritable(cache, how) as reason:
        result = CliRunner().invoke(app, args, env={"OPENAI_API_KEY": "sk-test"})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert errors == [f"error: {cache}: the teacher cache refused a write ({reason}), so the run stopped; the answers "
                      "stored before are kept, 1 answer(s) paid for could not be stored: they are in this run's output "
                      "only, and a rerun pays for them again"], result.output
    assert server.counts["chat"] == 6  # stopped at the first answer it could not store
    written = [json.loads(line)["teacher_status"] for line in out.read_text().splitlines()]
    assert sorted(written) == ["not_sent"] * 14 + ["ok"] * 6  # the 5 stored and the 1 it could not store
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT COUNT(*) FROM labels").fetchone() == (5,)
    if how == "locked":  # distill --teacher stops there too, before training on a part of the labels
        with unwritable(cache, how):
            result = CliRunner().invoke(app, ["distill", str(path), "-o", str(tmp_path / "judge"), "--teacher", "gpt-4o",
                                              "--base-url", server.url, "--cache", str(cache), "--student", "lexical"],
                                        env={"OPENAI_API_KEY": "sk-test"})
        assert result.exit_code == 1 and not (tmp_path / "judge" / "judge.json").exists(), result.output
        assert re.search(r"\d+ answer\(s\) paid for could not be stored, and a rerun pays for them again; nothing was "
                         r"trained\n", result.output), result.output


def open_new_cache(path: str, start: float) -> str:
    """One process's open of a cache no one has made yet, at `start` (as its siblings): "ok", or the error line."""
    while time.time() < start:
        pass
    try:
        Cache(path).close()
    except InputError as exc:
        return str(exc)
    return "ok"


def test_processes_making_one_new_cache_at_once_all_open_it_and_migrate_it_once(tmp_path):
    """Two runs starting on a new cache raced to switch it to WAL ("database is locked", without the busy
    timeout's wait) and to apply the migrations ("table labels already exists"): about 1 open in 45 failed."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(8) as pool:
        pool.map(time.sleep, [0] * 8)  # every worker started (and has imported judge) before the first round
        for attempt in range(25):
            path = tmp_path / f"c{attempt}.sqlite"
            opened = pool.starmap(open_new_cache, [(str(path), time.time() + 0.1)] * 8)
            assert opened == ["ok"] * 8, (attempt, opened)
            with sqlite3.connect(path) as db:
                assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
                assert db.execute("SELECT name FROM _migrations ORDER BY rowid").fetchall() == [
                    (migration.__name__,) for migration in MIGRATIONS]


def test_a_malformed_reply_fails_its_row_only_and_the_others_are_kept(server, tmp_path):
    """An HTML page with status 200, or a logprob past math.exp's range, crashed the run with a traceback
    and lost the answers in flight."""
    records = records_of(rows(12, {3: "#html#", 7: "#badlogprob#"}))
    cache = tmp_path / "c.sqlite"
    result = collect(records, teacher(server), scheme=VLS, cache_path=cache)
    by_id = {label.record_id: label for label in result.labels}
    assert by_id["r3"].status == "error" and "not a chat completion: '<html><body>502 Bad Gateway" in by_id["r3"].error
    assert by_id["r7"].status == "parse_error" and "logprob 5000.0 is not a log probability" in by_id["r7"].error
    assert by_id["r7"].raw.startswith('{"label":') and by_id["r7"].probs is None
    assert all(by_id[r.id].status == "ok" for r in records if r.id not in ("r3", "r7"))
    with sqlite3.connect(cache) as db:  # the paid, unreadable reply is kept; the HTML page is no answer
        assert dict(db.execute("SELECT status, COUNT(*) FROM labels GROUP BY status")) == {"ok": 10, "parse_error": 1}
    before = server.sent(None)
    collect(records, teacher(server), scheme=VLS, cache_path=cache)
    assert set(server.sent(None) - before) == {"item-3"}  # a rerun asks again only for the row with no answer
