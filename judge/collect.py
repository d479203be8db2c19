"""Collect teacher labels: each record's request is paid for once and stored the moment it is answered.

    from judge.collect import TeacherConfig, collect, labelled_rows
    result = collect(dataset.records, TeacherConfig(model="gpt-4o-2024-08-06"), scheme=dataset.scheme)
    write_jsonl("labels.jsonl", labelled_rows(dataset.records, result))

Online requests run concurrently through the async OpenAI client (its retries honour Retry-After);
``TeacherConfig.batch`` goes through the Batch API instead, and an interrupted batch is picked up
again from the cache on the next run. A refusal, an unparseable reply or a failed call becomes that
record's status; only an error that every request would meet (bad key, no access, unknown model,
no quota) stops the run, keeping what was answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from judge.cache import DEFAULT_CACHE, Cache, request_key
from judge.errors import InputError
from judge.records import FIELD_ALIASES, Dataset, Record, file_sha256, sources_of
from judge.schemes import Scheme
from judge.teacher import (BUILTIN_RUBRICS, REPLY_TOKENS, Rubric, cost_of, data_url, estimate_tokens, find_image,
                           load_rubric, make_client, parse_reply, permanent_error, price_of, request_body)
from judge.textio import check_writable

STATUSES = ("ok", "teacher_refused", "parse_error", "error")
BATCH_DONE = ("completed", "failed", "expired", "cancelled")
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@dataclass
class TeacherConfig:
    """Which teacher, which rubric, and how hard to push the endpoint."""

    model: str = "gpt-4o-2024-08-06"
    base_url: str | None = None  # default: OPENAI_BASE_URL, else api.openai.com
    api_key: str | None = field(default=None, repr=False)  # default: OPENAI_API_KEY; never stored
    rubric: str = "vlsbench"  # built-in rubric name (must match the scheme) or a template path
    prompt_file: str | None = None  # a user's template with {question} and {response}
    images: bool = True
    concurrency: int = 16
    rpm: int | None = None
    tpm: int | None = None
    max_cost: float | None = None  # USD; no new request starts once spent + in flight reaches it
    prices: dict | None = None  # {model: (USD per 1M input tokens, per 1M output tokens)}
    temperature: float = 0.0
    logprobs: bool = True
    max_retries: int = 6
    timeout: float = 120.0
    batch: bool = False
    poll_interval: float = 30.0
    batch_wait: float | None = None  # stop polling after this many seconds; a rerun resumes the batch
    retry_failed: bool = False  # pay again for requests whose stored answer is a refusal or unparseable


@dataclass
class TeacherLabel:
    record_id: str
    status: str  # "ok" | "teacher_refused" | "parse_error" | "error"
    label: str | None = None
    probs: dict[str, float] | None = None
    explanation: str | None = None
    raw: str | None = None
    model: str | None = None  # as the API reported it
    rubric_sha256: str = ""
    cost: float = 0.0  # USD paid for this answer (when it was first paid)
    cached: bool = False
    error: str | None = None


@dataclass
class CollectResult:
    labels: list[TeacherLabel]  # one per record that got an answer or an error; unsent records have none
    stats: dict


@dataclass
class Job:
    """One distinct request; records with identical requests share it (and its price)."""

    key: str
    record_ids: list[str]
    body: dict  # the image, if any, is a hash stand-in until sent
    image: Path | None
    est_tokens: int

    def send_body(self) -> dict:
        if self.image is None:
            return self.body
        body = json.loads(json.dumps(self.body))
        body["messages"][0]["content"][1]["image_url"]["url"] = data_url(self.image)
        return body


def resolve_rubric(teacher: TeacherConfig, scheme: Scheme) -> Rubric:
    rubric = load_rubric(teacher.rubric, teacher.prompt_file)
    if teacher.prompt_file is None and rubric.name in BUILTIN_RUBRICS and rubric.name != scheme.name:
        raise InputError(f"the {rubric.name} rubric answers in the {rubric.name} scheme, not {scheme.name}: "
                         f"use rubric {scheme.name!r} or a prompt file")
    return rubric


def prepare(records: list[Record], teacher: TeacherConfig, scheme: Scheme, rubric: Rubric
            ) -> tuple[dict[str, Job], dict[str, str], dict[str, str]]:
    """(jobs by key, key by record id, error by record id for records that cannot be sent)."""
    jobs: dict[str, Job] = {}
    keys: dict[str, str] = {}
    errors: dict[str, str] = {}
    for record in records:
        image, image_hash = None, None
        if teacher.images and record.image_path:
            try:
                image = find_image(record)
            except (OSError, ValueError) as exc:
                errors[record.id] = str(exc)
                continue
            image_hash = file_sha256(image)
        body = request_body(record, rubric, scheme, model=teacher.model, temperature=teacher.temperature,
                            image_url=f"sha256:{image_hash}" if image else None, logprobs=teacher.logprobs)
        key = request_key({"model": teacher.model, "rubric_sha256": rubric.sha256, "request": body,
                           "image_sha256": image_hash})
        keys[record.id] = key
        if key in jobs:
            jobs[key].record_ids.append(record.id)
        else:
            jobs[key] = Job(key, [record.id], body, image, estimate_tokens(body))
    return jobs, keys, errors


def plan(records: list[Record], teacher: TeacherConfig, *, scheme: Scheme, cache_path: str | Path = DEFAULT_CACHE) -> dict:
    """What `collect` would do (requests, already cached, estimated cost) without calling anything."""
    rubric = resolve_rubric(teacher, scheme)
    jobs, _, errors = prepare(records, teacher, scheme, rubric)
    stored, waiting = _cached(cache_path, jobs, teacher)
    pending = [job for key, job in jobs.items() if key not in stored and key not in waiting]
    price = price_of(teacher.model, teacher.prices)
    tokens = sum(job.est_tokens for job in pending)
    return {
        "records": len(records), "requests": len(jobs), "cached": len(stored), "in_open_batches": len(waiting),
        "to_send": len(pending),
        "unsendable": len(errors), "estimated_prompt_tokens": tokens,
        "estimated_cost": cost_of(price, tokens, REPLY_TOKENS * len(pending), batch=teacher.batch) if price else None,
        "price_per_million": price, "batch": teacher.batch, "rubric_sha256": rubric.sha256,
    }


def _cached(cache_path: str | Path, jobs: dict[str, Job], teacher: TeacherConfig) -> tuple[dict[str, dict], set[str]]:
    """(the stored answers to ``jobs``, the keys of the others that an open batch already carries)."""
    if not Path(cache_path).exists():  # no cache yet, but the run will need to make one there
        check_writable(cache_path)
        return {}, set()
    cache = Cache(cache_path)
    try:
        stored = _reusable(cache.get_many(jobs), teacher)
        carried = {key for batch in cache.open_batches(teacher.model) for key in batch["keys"]}
        return stored, (carried & jobs.keys()) - stored.keys()
    finally:
        cache.close()


def _reusable(stored: dict[str, dict], teacher: TeacherConfig) -> dict[str, dict]:
    """The stored answers a run takes as they are: all of them, or with ``retry_failed`` only the labels."""
    return {key: row for key, row in stored.items() if row["status"] == "ok"} if teacher.retry_failed else stored


class _Tally:
    """Running counts shared by the workers of one run (one event loop, so no locks)."""

    def __init__(self, teacher: TeacherConfig, total: int, done: int, progress: bool):
        from tqdm.auto import tqdm

        self.teacher, self.price = teacher, price_of(teacher.model, teacher.prices)
        self.sent = self.answers = self.flying = 0
        self.spent = self.reserved = 0.0
        self.errors: dict[str, str] = {}
        self.stopped: str | None = None
        self.signal: int | None = None  # the one that interrupted the run
        self.fatal: str | None = None  # the server's reason, when an error every request would meet stopped the run
        self.cache_error: str | None = None  # SQLite's reason, when the cache refused a write and stopped the run
        self.unstored: dict[str, dict] = {}  # answers paid for that the cache refused, by key: this run's output has them
        self.batches: list[dict] = []
        self.settled = asyncio.Condition()
        self.halted = asyncio.Event()  # set by `stop`: nothing more is sent
        self.bar = tqdm(total=total, initial=done, disable=not progress, unit="label", desc="collect")
        self.counts = Counter(cached=done)

    def estimate(self, job: Job) -> float:
        guess = cost_of(self.price, job.est_tokens, REPLY_TOKENS, batch=self.teacher.batch)
        return max(guess, self.spent / self.answers) if self.answers else guess

    def fits(self, estimate: float) -> bool:
        limit = self.teacher.max_cost
        return limit is None or self.spent + self.reserved + estimate <= limit

    async def admit(self, estimate: float) -> bool:
        """Reserve ``estimate`` within the budget, waiting for calls in flight to settle first.

        False once even an idle run would pass the budget; sticky, so the run stops instead of
        cherry-picking cheaper requests.
        """
        async with self.settled:
            await self.settled.wait_for(lambda: self.stopped or self.flying == 0 or self.fits(estimate))
            if self.stopped or not self.fits(estimate):
                self.stopped = self.stopped or "max_cost"
                return False
            self.reserved += estimate
            self.flying += 1
            return True

    async def stop(self, why: str) -> None:
        """Send nothing more: the requests waiting to be admitted are woken and stand down."""
        self.stopped = self.stopped or why
        self.halted.set()
        async with self.settled:
            self.settled.notify_all()

    async def unless_halted(self, wait) -> bool:
        """Await ``wait`` (the rate limiters); False, giving the wait up at once, when the run is stopped first."""
        waiting, halted = asyncio.ensure_future(wait), asyncio.ensure_future(self.halted.wait())
        try:
            await asyncio.wait((waiting, halted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
            halted.cancel()
        return not self.halted.is_set()

    async def release(self, estimate: float) -> None:
        async with self.settled:
            self.reserved -= estimate
            self.flying -= 1
            self.settled.notify_all()

    def store(self, write: Callable[[], None]) -> bool:
        """Run one cache write. A write SQLite refuses (locked past the busy timeout, a full disk, a read-only
        file) stops the run as an error every request would meet does: nothing more is sent (requests waiting
        for a slot hear it when the failed call releases its own), and the calls in flight still land."""
        try:
            write()
        except sqlite3.Error as exc:
            self.cache_error = self.cache_error or str(exc)
            self.stopped = self.stopped or "cache_error"
            self.halted.set()
            return False
        return True

    def record(self, cache: Cache, job: Job, rubric: Rubric, reply=None, error: str | None = None, via: str = "online") -> None:
        if reply is None:
            self.errors[job.key] = error or "unknown error"
            self.counts["failed"] += 1
        else:
            cost = cost_of(self.price or price_of(reply.model or "", self.teacher.prices), reply.prompt_tokens,
                           reply.completion_tokens, batch=via == "batch")
            answer = dict(record_id=job.record_ids[0], status=reply.status, label=reply.label, probs=reply.probs,
                          explanation=reply.explanation, raw=reply.raw, model=reply.model, requested_model=self.teacher.model,
                          rubric_sha256=rubric.sha256, error=reply.error, prompt_tokens=reply.prompt_tokens,
                          completion_tokens=reply.completion_tokens, cost=cost, via=via)
            if not self.store(lambda: cache.put(job.key, **answer)):
                self.unstored[job.key] = answer
            self.spent += cost
            self.answers += 1
            self.counts["done" if reply.status == "ok" else "failed"] += 1
        self.bar.update(len(job.record_ids))
        self.bar.set_postfix(done=self.counts["done"], cached=self.counts["cached"], failed=self.counts["failed"],
                             spent=f"${self.spent:.4f}", refresh=False)


async def _online(pending: list[Job], teacher: TeacherConfig, scheme: Scheme, rubric: Rubric, cache: Cache, tally: _Tally) -> None:
    """Send the requests concurrently, except those an open batch of this cache carries: a run switched from
    --batch to online takes their answers from the batch once it ends, and never pays for them twice."""
    import openai
    from aiolimiter import AsyncLimiter
    from openai.types.chat import ChatCompletion

    semaphore = asyncio.Semaphore(teacher.concurrency)
    rpm = AsyncLimiter(teacher.rpm, 60) if teacher.rpm else None
    tpm = AsyncLimiter(teacher.tpm, 60) if teacher.tpm else None

    async def limits(job: Job) -> None:
        if rpm:
            await rpm.acquire()
        if tpm:
            await tpm.acquire(min(job.est_tokens + REPLY_TOKENS, teacher.tpm))

    async def one(job: Job) -> None:
        async with semaphore:
            estimate = tally.estimate(job)
            if not await tally.admit(estimate):
                return
            try:
                if (rpm or tpm) and not await tally.unless_halted(limits(job)):
                    return  # stopped while it waited for the limiter: it stands down unsent
                tally.sent += 1
                completion = await client.chat.completions.create(**job.send_body())
            except (openai.OpenAIError, OSError) as exc:
                tally.record(cache, job, rubric, error=f"{type(exc).__name__}: {exc}")
                reason = permanent_error(exc)
                if reason:
                    tally.fatal = tally.fatal or reason
                    await tally.stop("teacher_error")
            else:
                if isinstance(completion, ChatCompletion):
                    tally.record(cache, job, rubric, parse_reply(completion.model_dump(mode="json"), scheme))
                else:  # a proxy's page passed on with status 200: no answer, so not stored and asked again on a rerun
                    tally.record(cache, job, rubric, error=f"not a chat completion: {str(completion)[:200]!r}")
            finally:
                await tally.release(estimate)

    async with make_client(api_key=teacher.api_key, base_url=teacher.base_url, max_retries=teacher.max_retries,
                           timeout=teacher.timeout) as client, _finish_in_flight_on_signal(tally):
        jobs = {job.key: job for job in pending}
        await _resume_open_batches(client, jobs, scheme, rubric, cache, tally, deadline=time.monotonic())  # one look
        await asyncio.gather(*(one(job) for job in jobs.values()))


@asynccontextmanager
async def _finish_in_flight_on_signal(tally: _Tally):
    """The first Ctrl-C, SIGTERM or SIGHUP sends nothing more but lets the calls in flight (already paid for) land
    in the cache; a second signal aborts. Only where Python takes signals: the main thread of a POSIX process."""
    loop = asyncio.get_running_loop()

    def interrupted(signum: int) -> None:
        if tally.stopped == "interrupted":
            raise KeyboardInterrupt
        tally.stopped, tally.signal = "interrupted", signum
        loop.create_task(tally.stop("interrupted"))
        again = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        tally.bar.write(f"interrupted: finishing the {tally.flying} requests in flight; {again} again to abort",
                        file=sys.stderr)

    try:
        for signum in STOP_SIGNALS:
            loop.add_signal_handler(signum, interrupted, signum)
    except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread (a notebook's worker)
        yield
        return
    try:
        yield
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _batch(pending: list[Job], teacher: TeacherConfig, scheme: Scheme, rubric: Rubric, cache: Cache,
                 tally: _Tally) -> None:
    """Resume this cache's open batches that cover pending requests, then submit one batch for the rest."""
    import openai

    jobs = {job.key: job for job in pending}
    async with make_client(api_key=teacher.api_key, base_url=teacher.base_url, max_retries=teacher.max_retries,
                           timeout=teacher.timeout) as client:
        deadline = time.monotonic() + teacher.batch_wait if teacher.batch_wait is not None else None
        await _resume_open_batches(client, jobs, scheme, rubric, cache, tally, deadline)
        rest = []
        for job in jobs.values():
            estimate = tally.estimate(job)
            if not tally.fits(estimate):
                tally.stopped = "max_cost"
                break
            tally.reserved += estimate
            rest.append(job)
        if not rest:
            return
        path = cache.path.parent / "batches" / f"{rest[0].key.replace(':', '-')}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            for job in rest:
                handle.write(json.dumps({"custom_id": job.key, "method": "POST", "url": "/v1/chat/completions",
                                         "body": job.send_body()}) + "\n")
        try:
            upload = await client.files.create(file=path, purpose="batch")
            created = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                  completion_window="24h")
        except openai.OpenAIError as exc:
            for job in rest:
                tally.record(cache, job, rubric, error=f"batch submission failed: {type(exc).__name__}: {exc}")
            tally.fatal = permanent_error(exc)
            tally.stopped = tally.stopped or ("teacher_error" if tally.fatal else None)
            return
        tally.store(lambda: cache.add_batch(created.id, upload.id, teacher.model, [job.key for job in rest], created.status))
        tally.sent, tally.reserved = tally.sent + len(rest), 0.0
        await _finish_batch(client, created.id, rest, scheme, rubric, cache, tally, deadline)


async def _resume_open_batches(client, jobs: dict[str, Job], scheme: Scheme, rubric: Rubric, cache: Cache,
                               tally: _Tally, deadline: float | None) -> None:
    """Take the jobs this cache's open batches already carry out of ``jobs`` and finish those batches (waiting
    until ``deadline``): their requests are paid for, so they are never sent again, online or in a new batch."""
    for batch in cache.open_batches(tally.teacher.model):
        mine = [jobs.pop(key) for key in batch["keys"] if key in jobs]
        if mine:
            await _finish_batch(client, batch["batch_id"], mine, scheme, rubric, cache, tally, deadline)


async def _finish_batch(client, batch_id: str, jobs: list[Job], scheme: Scheme, rubric: Rubric, cache: Cache,
                        tally: _Tally, deadline: float | None) -> None:
    """Poll until the batch ends (or the wait runs out), then merge every output line into the cache."""
    import openai

    while True:
        try:
            batch = await client.batches.retrieve(batch_id)
        except openai.OpenAIError as exc:  # the batch stays open in the cache; a rerun polls it again
            tally.batches.append({"id": batch_id, "status": f"unreachable ({type(exc).__name__})", "requests": len(jobs)})
            return
        tally.store(lambda: cache.set_batch(batch_id, batch.status))
        tally.bar.set_description(f"batch {batch_id} {batch.status}")
        if batch.status in BATCH_DONE or (deadline is not None and time.monotonic() >= deadline):
            break
        await asyncio.sleep(tally.teacher.poll_interval)
    entry = {"id": batch_id, "status": batch.status, "requests": len(jobs)}
    tally.batches.append(entry)
    if batch.status not in BATCH_DONE:
        return
    outputs = []
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            try:
                outputs.append((await client.files.content(file_id)).text)
            except openai.OpenAIError as exc:  # nothing merged yet: the batch stays open and a rerun fetches again
                entry["status"] += f", output unreachable ({type(exc).__name__})"
                return
    by_key, unreadable = {job.key: job for job in jobs}, 0
    for line in "\n".join(outputs).splitlines():
        if not line.strip():
            continue
        custom_id, completion, error = read_batch_line(line)
        job = by_key.pop(custom_id, None)
        if job is None:
            unreadable += custom_id is None
        elif completion is not None:
            tally.record(cache, job, rubric, parse_reply(completion, scheme), via="batch")
        else:  # not stored, so a rerun asks again
            tally.record(cache, job, rubric, error=error)
    if unreadable:
        entry["unreadable_lines"] = unreadable
    for job in by_key.values():
        tally.record(cache, job, rubric, error=f"batch {batch_id} ended {batch.status} without this request"
                                               + (f" ({unreadable} output lines unreadable)" if unreadable else ""))
    tally.store(lambda: cache.set_batch(batch_id, batch.status, merged=True))


def read_batch_line(line: str) -> tuple[str | None, dict | None, str | None]:
    """(custom_id, the chat completion, why there is none) of one batch output line; never raises, since one bad
    line must not lose the batch's other answers. custom_id is None when the line cannot be read at all."""
    import pydantic
    from openai.types.chat import ChatCompletion

    try:
        item = json.loads(line)
    except ValueError:
        return None, None, None
    if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
        return None, None, None
    response = item.get("response") if isinstance(item.get("response"), dict) else {}
    body, status = response.get("body"), response.get("status_code")
    if status == 200:
        try:
            ChatCompletion.model_validate(body)
        except pydantic.ValidationError:
            return item["custom_id"], None, f"batch request answered with something not a chat completion: {str(body)[:200]!r}"
        return item["custom_id"], body, None
    error = item.get("error") if isinstance(item.get("error"), dict) else None
    error = error or (body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {})
    return item["custom_id"], None, f"batch request failed ({status}): {error.get('message')}"


def _run(coroutine):
    """asyncio.run, also from a notebook whose event loop is already running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def collect(records: list[Record], teacher: TeacherConfig, *, scheme: Scheme, cache_path: str | Path = DEFAULT_CACHE,
            progress: bool = False) -> CollectResult:
    """Label ``records`` with the teacher; stored answers are reused, new ones stored as they arrive."""
    rubric = resolve_rubric(teacher, scheme)
    if teacher.max_cost is not None and price_of(teacher.model, teacher.prices) is None:
        raise InputError(f"no price known for {teacher.model}: give one (--price IN,OUT) to use a budget")
    jobs, keys, unsendable = prepare(records, teacher, scheme, rubric)
    cache = Cache(cache_path)
    try:
        before = _reusable(cache.get_many(jobs), teacher)
        if len(before) < len(jobs):  # requests to send: only one run may send through a cache at a time
            cache.claim()
            before = _reusable(cache.get_many(jobs), teacher)  # what a run that just let go of the cache stored meanwhile
        pending = [job for key, job in jobs.items() if key not in before]
        cached_records = sum(len(job.record_ids) for key, job in jobs.items() if key in before)
        tally = _Tally(teacher, len(records), cached_records, progress)
        if pending:
            _run((_batch if teacher.batch else _online)(pending, teacher, scheme, rubric, cache, tally))
        tally.bar.close()
        stored = {**tally.unstored, **cache.get_many(jobs)}
    finally:
        cache.close()

    labels: list[TeacherLabel] = []
    first_use: set[str] = set()
    for record in records:
        if record.id in unsendable:
            labels.append(TeacherLabel(record.id, "error", rubric_sha256=rubric.sha256, error=unsendable[record.id]))
            continue
        key = keys[record.id]
        if key in tally.errors:
            labels.append(TeacherLabel(record.id, "error", rubric_sha256=rubric.sha256, error=tally.errors[key]))
        elif key in stored:
            row = stored[key]
            labels.append(TeacherLabel(record.id, row["status"], row["label"], row["probs"], row["explanation"],
                                       row["raw"], row["model"], row["rubric_sha256"], row["cost"],
                                       cached=key in before or key in first_use, error=row["error"]))
            first_use.add(key)
    status = Counter(label.status for label in labels)
    stats = {"records": len(records), "requests": len(jobs), "cached": cached_records, "sent": tally.sent,
             "labelled": status["ok"], "failed": len(labels) - status["ok"], "unsent": len(records) - len(labels),
             "spent": tally.spent, "status": {s: status[s] for s in STATUSES if status[s]},
             "stopped": tally.stopped, "signal": tally.signal, "teacher_error": tally.fatal, "batches": tally.batches,
             "cache_error": tally.cache_error, "unstored": len(tally.unstored), "rubric_sha256": rubric.sha256}
    return CollectResult(labels, stats)


def stop_reason(stats: dict, cache_path: str | Path, *, in_output: bool = True) -> tuple[str | None, int]:
    """(the error line, the exit code) of a run that stopped short, as `judge collect` gives them: a cache that
    refused a write (``in_output``: the answers it could not store are in the rows the command writes) or an
    error every request would meet is exit 1 with the reason, a stop signal 128 + its number; (None, 0) else."""
    if stats["cache_error"]:
        lost = stats["unstored"]
        kept = ("every answer received is stored" if not lost else
                f"{lost} answer(s) paid for could not be stored: they are in this run's output only, and a rerun pays "
                "for them again" if in_output else f"{lost} answer(s) paid for could not be stored, and a rerun pays "
                "for them again")
        return str(InputError(f"the teacher cache refused a write ({stats['cache_error']}), so the run stopped; the "
                              f"answers stored before are kept, {kept}", path=cache_path)), 1
    if stats["teacher_error"]:
        return f"the teacher endpoint refused the run: {stats['teacher_error']}", 1
    if stats["stopped"] == "interrupted":
        return None, 128 + stats["signal"]
    return None, 0


def labelled_rows(records: list[Record], result: CollectResult, sample: dict[str, dict] | None = None) -> list[dict]:
    """Each input row plus the teacher's answer, in the fields `judge distill` reads (label, label_probs),
    and, given ``sample``, how the row was drawn (``judge_sample``, for `judge estimate`)."""
    by_id = {label.record_id: label for label in result.labels}
    rows = []
    for record in records:
        row = dict(record.raw)
        if sample and record.id in sample:
            row[SAMPLE_FIELD] = sample[record.id]
        answer = by_id.get(record.id)
        if answer is None:
            rows.append({**row, "teacher_status": "not_sent"})
            continue
        ok = answer.status == "ok"
        row.update(label=answer.label if ok else None, label_probs=answer.probs if ok else None,
                   teacher_model=answer.model, rubric_sha256=answer.rubric_sha256, teacher_status=answer.status,
                   teacher_explanation=answer.explanation, teacher_cost=answer.cost)
        if not ok:
            row.update(teacher_error=answer.error, teacher_raw=answer.raw)
        rows.append(row)
    return rows


def label_missing(dataset: Dataset, teacher: TeacherConfig, *, cache_path: str | Path = DEFAULT_CACHE,
                  progress: bool = True) -> CollectResult:
    """Give every unlabelled record of ``dataset`` a teacher label in place (through the same cache)."""
    missing = [record for record in dataset.records if record.label is None]
    result = collect(missing, teacher, scheme=dataset.scheme, cache_path=cache_path, progress=progress)
    answers = {label.record_id: label for label in result.labels if label.status == "ok"}
    for record in missing:
        answer = answers.get(record.id)
        if answer is not None:
            record.label, record.label_probs = answer.label, answer.probs
            record.raw.update(teacher_model=answer.model, rubric_sha256=answer.rubric_sha256)
    return result


def _field_value(record: Record, name: str) -> object:
    """A record's value for a column name as users write it (aliases such as response_model allowed)."""
    for canonical, aliases in FIELD_ALIASES.items():
        if name in aliases and hasattr(record, canonical):
            return getattr(record, canonical)
    return record.raw.get(name)


def draw_rank(record: Record, seed: int) -> bytes:
    """A record's place in a seeded draw: a keyed hash of its id, not of its position, so the same rows
    are drawn whatever the file's order, and a file that grows keeps the rows it drew before."""
    return hashlib.blake2b(f"{seed}:{record.id}".encode("utf-8"), digest_size=8).digest()


def draw_coin(record: Record, seed: int) -> float:
    """`draw_rank` as a uniform number in [0, 1): a record's permanent coin for an active draw, drawn when it
    falls below the record's inclusion probability (Poisson sampling with permanent random numbers, Ohlsson
    1995), so a reordered or grown file keeps the rows it drew wherever their probabilities hold."""
    return int.from_bytes(draw_rank(record, seed), "big") / 2 ** 64


def _first_drawn(records: list[Record], members: list[int], k: int, seed: int) -> list[int]:
    """The ``k`` of ``members`` (indices into ``records``) that rank first in the seeded draw."""
    return sorted(members, key=lambda i: draw_rank(records[i], seed))[:k]


def stratified_sample(records: list[Record], n: int, by: list[str] | tuple[str, ...] = (), *, seed: int = 0) -> list[Record]:
    """A seeded sample of ``n`` records with each stratum (combination of ``by`` values) in proportion.

    Quotas are rounded by largest remainder, so the sample has exactly ``n`` records and every
    stratum keeps its share within one record. Within a stratum the records that rank first by
    `draw_rank` are taken. Order follows the input.
    """
    if n >= len(records):
        return list(records)
    strata: dict[tuple, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        strata[tuple(str(_field_value(record, name)) for name in by)].append(index)
    exact = {key: n * len(members) / len(records) for key, members in strata.items()}
    quota = {key: int(value) for key, value in exact.items()}
    for key in sorted(exact, key=lambda k: (quota[k] - exact[k], str(k)))[: n - sum(quota.values())]:
        quota[key] += 1
    chosen = sorted(i for key, members in strata.items() for i in _first_drawn(records, members, quota[key], seed))
    return [records[i] for i in chosen]


SAMPLE_FIELD = "judge_sample"  # the draw, recorded in each drawn row (judge.estimate reads it)


def draw_per_group(records: list[Record], n: int, *, per: str = "model", seed: int = 0, design: str = "uniform",
                   uncertainty: Sequence[float] | None = None, mix: float = 0.5) -> tuple[list[Record], dict[str, dict]]:
    """A random teacher sample of about ``n`` records per value of ``per``, and the draw recorded per record.

    ``uniform``: exactly min(n, N) records of each group, the ones that rank first by `draw_rank`
    (seeded and uniform, whatever the file's order); inclusion probability n / N. ``active``
    (Zrnic & Candes 2024): each record is drawn on its own (its `draw_coin`) with probability proportional to
    ``uncertainty`` (mixed with uniform by ``mix``, so no record's probability is tiny) and n per
    group expected; the estimator divides by these probabilities, so the estimate stays unbiased
    while the labels go where the student is least sure.
    """
    if design not in ("uniform", "active"):
        raise InputError(f"unknown draw {design!r}: use uniform or active")
    if design == "active" and uncertainty is None:
        raise InputError("an active draw needs the student's probabilities: a scored file (judge_probs) or --judge DIR")
    values = [_field_value(record, per) for record in records]
    if all(value is None for value in values):
        raise InputError(f"--per {per}: no record has this field to draw per",
                         path=sources_of(records))
    strata: dict[str, list[int]] = defaultdict(list)
    for index, value in enumerate(values):
        strata[str(value)].append(index)
    chosen: dict[int, dict] = {}
    for key, members in sorted(strata.items()):
        size = len(members)
        if design == "uniform":
            picked = _first_drawn(records, members, n, seed)
            chosen.update({i: {"stratum": key, "stratum_size": size, "inclusion_prob": len(picked) / size} for i in picked})
            continue
        weight = np.array([uncertainty[i] for i in members], dtype=float) + 1e-9
        pi = inclusion_probabilities(n * ((1 - mix) * weight / weight.sum() + mix / size))
        chosen.update({i: {"stratum": key, "stratum_size": size, "inclusion_prob": float(p)}
                       for i, p in zip(members, pi) if draw_coin(records[i], seed) < p})
    meta = {"purpose": "estimation", "design": design, "per": per, "seed": seed, "n_per_group": n}
    order = sorted(chosen)
    return [records[i] for i in order], {records[i].id: {**meta, **chosen[i]} for i in order}


def inclusion_probabilities(target: np.ndarray) -> np.ndarray:
    """Cap probabilities at 1 and hand the excess to the others in proportion, keeping their sum."""
    pi = np.asarray(target, dtype=float).copy()
    total = min(pi.sum(), len(pi))
    for _ in range(len(pi)):
        capped = pi >= 1
        pi[capped] = 1.0
        free = total - capped.sum()
        rest = pi[~capped]
        if not len(rest) or rest.sum() <= 0 or abs(rest.sum() - free) < 1e-12:
            break
        pi[~capped] = rest * free / rest.sum()
    return np.minimum(pi, 1.0)


def select_uncertain(records: list[Record], n: int, confidence: Sequence[float], *, judge: str = "") -> tuple[list[Record], dict[str, dict]]:
    """The ``n`` unlabelled records the judge is least sure of (lowest top-label probability), for training.

    Not a random sample: recorded as ``purpose: training``, and `judge estimate` refuses it.
    """
    pool = [i for i, r in enumerate(records) if r.label is None]
    order = sorted(pool, key=lambda i: (confidence[i], records[i].id))[:n]
    meta = {"purpose": "training", "design": "uncertain", "judge": judge,
            "note": "chosen by the judge's uncertainty: not a random sample; do not estimate rates from it"}
    return [records[i] for i in sorted(order)], {records[i].id: {**meta, "confidence": round(float(confidence[i]), 6)}
                                                 for i in sorted(order)}


def student_probabilities(records: list[Record], scheme: Scheme, judge_dir: str | Path | None = None) -> np.ndarray:
    """The student's probabilities per record: from ``judge_dir``, else the judge_probs a scored file carries."""
    if judge_dir is not None:
        from judge.model import Judge

        judge = Judge.load(judge_dir)
        if judge.scheme.classes != scheme.classes:
            raise InputError(f"the judge speaks {judge.scheme.name}, the records {scheme.name}", path=judge_dir)
        return judge.predict_proba(records, progress=True)
    missing = next((r for r in records if not isinstance(r.raw.get("judge_probs"), dict)), None)
    if missing is not None:
        raise InputError(f"record {missing.id!r} has no judge_probs: collect from a `judge score` output or pass --judge DIR",
                         path=missing.source)
    try:
        return np.array([[float(r.raw["judge_probs"][c]) for c in scheme.classes] for r in records])
    except KeyError as exc:
        raise InputError(f"judge_probs lacks class {exc}: scored by a judge of another scheme?") from None


def teacher_sample(dataset: Dataset, n: int | None, *, stratify_by: Sequence[str] = ("model", "category"), seed: int = 0,
                   per: str | None = None, draw: str = "uniform", select: str | None = None,
                   judge_dir: str | Path | None = None) -> tuple[list[Record], dict[str, dict]]:
    """The records to send to the teacher and, for a recorded draw, how each was drawn (`judge collect`'s options).

    No ``n``: every record. ``select="uncertain"``: the n the judge is least sure of, for training.
    ``per``: n per group (`draw_per_group`), for estimates. Otherwise a proportional stratified sample.
    """
    if select not in (None, "uncertain"):
        raise InputError(f"unknown --select {select!r}: use uncertain")
    if n is None:
        if per or select:
            raise InputError("--per and --select need --sample N")
        return dataset.records, {}
    if select and per:
        raise InputError("--select uncertain picks training items, --per an estimation sample: use one (in separate runs)")
    if draw != "uniform" and not per:  # it would be an unrecorded proportional sample, not the draw asked for
        raise InputError(f"--draw {draw} draws per group: add --per FIELD (e.g. --per model)")
    if select:
        probs = student_probabilities(dataset.records, dataset.scheme, judge_dir)
        return select_uncertain(dataset.records, n, probs.max(axis=1), judge=str(judge_dir or "judge_probs"))
    if per:
        uncertainty = None
        if draw == "active":
            probs = student_probabilities(dataset.records, dataset.scheme, judge_dir)
            rate = dataset.scheme.rate_probability(probs)
            uncertainty = np.sqrt(rate * (1 - rate))  # the headline rate's error spread, if the student is calibrated
        return draw_per_group(dataset.records, n, per=per, seed=seed, design=draw, uncertainty=uncertainty)
    return stratified_sample(dataset.records, n, list(stratify_by), seed=seed), {}


def format_plan(info: dict) -> str:
    cost = "unknown (no price for this model: --price IN,OUT)" if info["estimated_cost"] is None \
        else f"~${info['estimated_cost']:.2f}" + (" (Batch API, half price)" if info["batch"] else "")
    waiting = f"{info['in_open_batches']} in an open batch (paid; a run picks them up), " if info["in_open_batches"] else ""
    return (f"{info['records']} records -> {info['requests']} distinct requests: {info['cached']} cached, {waiting}"
            f"{info['to_send']} to send, {info['unsendable']} cannot be sent (missing or bad image)\n"
            f"estimated cost of the requests to send: {cost}")


def format_stats(stats: dict) -> str:
    status = ", ".join(f"{name} {count}" for name, count in stats["status"].items()) or "none"
    lines = [f"{stats['records']} records: {stats['labelled']} labelled, {stats['failed']} without a label "
             f"({status}), {stats['unsent']} not sent",
             f"{stats['sent']} requests sent, {stats['cached']} records from the cache, spent ${stats['spent']:.4f}"]
    if stats["stopped"] == "max_cost":
        lines.append("stopped at the --max-cost budget; rerun with a higher budget to continue (nothing is paid twice)")
    elif stats["stopped"] == "teacher_error":
        lines.append("stopped at an error every request would meet; what was answered is stored, "
                     "so a rerun after the fix pays for none of it again")
    elif stats["stopped"] == "interrupted":
        lines.append("interrupted: the requests in flight were stored; rerun to continue (nothing is paid twice)")
    elif stats["stopped"] == "cache_error":
        lines.append(f"stopped: the teacher cache refused a write ({stats['cache_error']}); answers paid for and "
                     f"not stored: {stats['unstored']}")
    lines += [f"batch {b['id']}: {b['status']}" + ("" if b["status"] in BATCH_DONE else " (rerun to pick it up)")
              + (f"; {b['unreadable_lines']} output lines unreadable, their requests failed" if b.get("unreadable_lines") else "")
              for b in stats["batches"]]
    return "\n".join(lines)
