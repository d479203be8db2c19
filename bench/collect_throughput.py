"""Teacher collection against the local scripted OpenAI server: throughput, then a SIGKILL-and-rerun check.

1. Collects ~2,000 synthetic records with concurrency 32 through the real openai client against
   tests/openai_server.py (a fixed per-request delay stands in for the teacher's latency) and prints
   requests per second; a second run shows the cache answering everything with zero requests.
2. Starts `judge collect` as a subprocess, SIGKILLs it a third of the way in, reruns it, and prints
   how many requests whose answer was already stored were sent again (must be 0), and how many
   calls in flight at the kill were lost (at most the concurrency).

    nice -n 10 .venv/bin/python bench/collect_throughput.py [--n 2000] [--concurrency 32] [--delay 0.05]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.shared_data import dataset_of  # noqa: E402
from judge.collect import TeacherConfig, collect, prepare, resolve_rubric  # noqa: E402
from judge.records import build_dataset, read_records  # noqa: E402
from tests.openai_server import ScriptedOpenAI  # noqa: E402
from tests.tiny import synthetic_rows, write_jsonl  # noqa: E402


def tagged_rows(n: int) -> list[dict]:
    rows = synthetic_rows(n, with_labels=False)
    for i, row in enumerate(rows):
        row["response"] += f" item-{i}"
    return rows


def serve(delay: float, urls: multiprocessing.Queue) -> None:
    """The server in its own process, so it does not share the client's interpreter lock."""
    with ScriptedOpenAI(delay=delay) as server:
        urls.put(server.url)
        while True:
            time.sleep(60)


def throughput(n: int, concurrency: int, delay: float, work: Path) -> None:
    rows = tagged_rows(n)
    dataset = dataset_of(rows, "bench.jsonl")
    urls: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=serve, args=(delay, urls), daemon=True)
    process.start()
    try:
        config = TeacherConfig(model="gpt-4o", base_url=urls.get(timeout=60), api_key="sk-bench", concurrency=concurrency)
        start, cpu = time.perf_counter(), time.process_time()
        result = collect(dataset.records, config, scheme=dataset.scheme, cache_path=work / "throughput.sqlite")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        print(f"throughput: {result.stats['sent']} requests in {seconds:.1f} s = {result.stats['sent'] / seconds:.0f} "
              f"requests/s (concurrency {concurrency}, server delay {delay * 1000:.0f} ms, "
              f"ceiling {concurrency / delay:.0f}/s); {result.stats['labelled']} labelled, "
              f"simulated spend ${result.stats['spent']:.2f}")
        print(f"client CPU: {cpu / result.stats['sent'] * 1000:.1f} ms per request (one free core: "
              f"~{result.stats['sent'] / cpu:.0f} requests/s); machine load average {os.getloadavg()[0]:.1f}")
        start = time.perf_counter()
        again = collect(dataset.records, config, scheme=dataset.scheme, cache_path=work / "throughput.sqlite")
        print(f"rerun: {again.stats['cached']} from the cache, {again.stats['sent']} requests, "
              f"{time.perf_counter() - start:.1f} s")
    finally:
        process.kill()


def kill_and_rerun(n: int, concurrency: int, delay: float, work: Path) -> None:
    path = write_jsonl(work / "kill.jsonl", tagged_rows(n))
    cache, out = work / "kill.sqlite", work / "kill_labels.jsonl"
    with ScriptedOpenAI(delay=delay) as server:
        command = [sys.executable, str(ROOT / "cli.py"), "collect", str(path), "-o", str(out), "--teacher", "gpt-4o",
                   "--base-url", server.url, "--concurrency", str(concurrency), "--cache", str(cache)]
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "PYTHONPATH": str(ROOT)}
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while len(server.requests) < n // 3 and process.poll() is None:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
        answered_before = len(server.requests)

        records = read_records(path).records
        config = TeacherConfig(model="gpt-4o", base_url=server.url, api_key="sk-bench")
        scheme = build_dataset([]).scheme
        _, keys, _ = prepare(records, config, scheme, resolve_rubric(config, scheme))
        with sqlite3.connect(cache) as db:
            stored = {key for (key,) in db.execute("SELECT key FROM labels")}
        stored_tags = {r.response.split()[-1] for r in records if keys[r.id] in stored}

        subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
        resent = [r["tag"] for r in server.requests[answered_before:]]
        repeats = len(stored_tags & set(resent))
        lost = sum(server.sent(200).values()) - n
        labels = [json.loads(line) for line in out.read_text().splitlines()]
        print(f"kill test: SIGKILL after {answered_before} answers ({len(stored)} stored); rerun sent {len(resent)}; "
              f"stored requests sent again: {repeats}; in-flight calls lost at the kill: {lost} "
              f"(concurrency {concurrency}); labels in the final file: {sum(bool(r.get('label')) for r in labels)}/{n}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.05, help="server seconds per request")
    parser.add_argument("--kill-n", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        throughput(args.n, args.concurrency, args.delay, Path(tmp))
        kill_and_rerun(args.kill_n, args.concurrency, args.delay, Path(tmp))


if __name__ == "__main__":
    main()
