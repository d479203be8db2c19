"""`judge serve`: the distilled judge behind an OpenAI-compatible chat endpoint.

Benchmark scripts already call GPT-4o through the openai SDK or plain ``requests``; pointing
``OPENAI_BASE_URL`` (VLMEvalKit: ``OPENAI_API_BASE``) here makes them use the offline student
unchanged. A request's prompt is undone by `judge.extract` (question, response and the scenario
its rubric names), concurrent requests are scored together in micro-batches (one `Judge.predict`
call per batch), and the answer comes back in the form the script expects: JSON for a
``json_schema`` response_format (so ``client.beta.chat.completions.parse`` returns a parsed
object), otherwise the word the prompt asks for (safe / unsafe, HarmBench's Yes / No, or the
label). ``/v1/moderations`` flags what the judge calls unsafe. A health probe ("hello") gets a
short text that is no label; a judge prompt that cannot be parsed gets a 400, never a made-up
label. Loopback only by default; prompt and response text are never logged unless ``log_content``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException

from judge.extract import (ASKS_SAFE_WORD, Extraction, ExtractionError, compile_patterns, extract,
                           is_health_probe)
from judge.model import Judge, Prediction
from judge.records import Record
from judge.schemes import Scheme

log = logging.getLogger("judge.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
MAX_REQUEST_BYTES = 16 << 20  # a judge prompt plus one base64 image fits easily
MAX_BATCH = 32
BATCH_WAIT_MS = 5.0
IMAGE_PARTS = ("image_url", "input_image", "image")
MIN_LOGPROB = -9999.0  # what OpenAI reports for an impossible token (log 0 is not valid JSON)
# OpenAI's moderation categories: the student has none of them, so all stay false / 0 and only
# `flagged` (plus the extra `judge` object) carries its verdict.
MODERATION_CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
                         "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
                         "sexual/minors", "violence", "violence/graphic")


class RequestError(Exception):
    """A request the server refuses; rendered as an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error"}.get(
        status, "invalid_request_error" if status < 500 else "server_error")
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


class ChatRequest(BaseModel):
    """The fields of a chat-completions request the judge reads; others (temperature, ...) are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[dict]
    response_format: dict | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = Field(None, ge=0, le=20)  # OpenAI's own bounds
    n: int | None = Field(1, ge=1, le=128)
    stream: bool | None = False


@dataclass
class BatchStats:
    """How micro-batching went: the test and the load benchmark read these."""

    requests: int = 0
    batches: int = 0
    largest: int = 0

    @property
    def mean(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class MicroBatcher:
    """Collects concurrent requests for up to `wait_ms` (or `max_batch` of them), then scores them in one call.

    The model runs in a worker thread so the event loop keeps accepting requests meanwhile; batches
    run one at a time, so whatever arrives during one forward pass forms the next batch.
    """

    def __init__(self, judge: Judge, *, max_batch: int = MAX_BATCH, wait_ms: float = BATCH_WAIT_MS):
        self.judge, self.max_batch, self.wait = judge, max(1, max_batch), wait_ms / 1000
        self.stats = BatchStats()
        self._pending: list[tuple[Record, asyncio.Future]] = []
        # Events, not Queue.get under wait_for: cancelling a timed-out wait can never lose a request.
        self._arrived, self._full = asyncio.Event(), asyncio.Event()

    async def run(self) -> None:
        while True:
            await self._arrived.wait()
            if len(self._pending) < self.max_batch and self.wait > 0:
                try:
                    await asyncio.wait_for(self._full.wait(), self.wait)
                except asyncio.TimeoutError:
                    pass
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
            if not self._pending:
                self._arrived.clear()
            if len(self._pending) < self.max_batch:
                self._full.clear()
            await self._score(batch)

    async def _score(self, batch: list[tuple[Record, asyncio.Future]]) -> None:
        try:
            predictions = await asyncio.to_thread(self.judge.predict, [record for record, _ in batch])
        except Exception:  # rescored one by one, so a request that breaks the judge fails alone
            log.exception("scoring a batch of %d failed; scoring its requests one by one", len(batch))
            predictions = [await asyncio.to_thread(self._predict_one, record) for record, _ in batch]
        self.stats.requests += len(batch)
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, len(batch))
        for (_, future), prediction in zip(batch, predictions):
            if future.done():  # the client went away
                continue
            if isinstance(prediction, Exception):
                future.set_exception(prediction)
            else:
                future.set_result(prediction)

    def _predict_one(self, record: Record) -> Prediction | Exception:
        try:
            return self.judge.predict([record])[0]
        except Exception as exc:  # the server keeps going; this request gets a 500
            log.exception("scoring request %s failed", record.id)
            return exc

    async def predict(self, record: Record) -> Prediction:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((record, future))
        self._arrived.set()
        if len(self._pending) >= self.max_batch:
            self._full.set()
        return await future


# --- reading a request -------------------------------------------------------------------------

async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {declared} bytes is over the {limit}-byte limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"request body is over the {limit}-byte limit")
    return bytes(body)


def parse_request(body: bytes) -> ChatRequest:
    try:
        chat = ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RequestError(400, f"invalid request: {where}: {first['msg']}", param=where) from None
    if chat.stream:
        raise RequestError(400, "stream=true is not supported by the offline judge; send stream=false", param="stream")
    if not chat.messages:
        raise RequestError(400, "messages is empty: send the judge prompt as a user message", param="messages")
    return chat


def prompt_text(messages: Sequence[dict]) -> tuple[str, bool]:
    """The text of the system messages and the last user message, and whether an image part came along."""
    users = [m for m in messages if m.get("role") == "user"]
    if not users:
        raise RequestError(400, "no user message: the judge prompt goes in a message with role 'user'", param="messages")
    texts, has_image = [], False
    for message in [*(m for m in messages if m.get("role") in ("system", "developer")), users[-1]]:
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        if not isinstance(parts, list):
            raise RequestError(400, "message content must be a string or a list of parts", param="messages")
        for part in parts:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind in IMAGE_PARTS:
                has_image = True  # the student reads text only; the teacher's image is not needed
            else:
                raise RequestError(400, f"unsupported content part {kind!r}: send text and image_url parts",
                                   param="messages")
    return "\n".join(texts), has_image


# --- writing the answer ------------------------------------------------------------------------

def label_forms(scheme: Scheme) -> dict[str, Callable[[str], object]]:
    """The ways a label can be written: its code (1/2/3), display string, name, safe/unsafe, or
    HarmBench's Yes (an instance of the harmful behaviour, i.e. unsafe) / No."""
    def code(name: str) -> object:
        value = scheme.label(name).code
        return name if value is None else value
    return {"code": code, "display": lambda name: scheme.label(name).display, "name": lambda name: name,
            "binary": scheme.to_binary, "yes_no": lambda name: "No" if scheme.is_safe(name) else "Yes"}


# Forms that collapse the scheme to its safe / unsafe split: the answer is the side of the predicted label.
SIDE_FORMS = ("binary", "yes_no")


# Which forms may fill a schema field, in order of preference. Other field names cannot be filled.
FIELD_FORMS = {"label": ("code", "display", "name", "binary"), "label_str": ("display", "name", "binary")}


def _fits(prop: dict, value: object) -> bool:
    allowed = prop.get("enum", [prop["const"]] if "const" in prop else None)
    if allowed is not None:
        return value in allowed and not isinstance(value, bool)
    kinds = prop.get("type")
    kinds = [kinds] if isinstance(kinds, str) else kinds or []
    checks = {"integer": lambda v: isinstance(v, int), "number": lambda v: isinstance(v, (int, float)),
              "string": lambda v: isinstance(v, str)}
    return not kinds or any(checks.get(k, lambda v: False)(value) for k in kinds)


@dataclass
class Answer:
    content: str
    form: str  # the label form the logprobs are given in
    label: str  # the label written (a scheme class, or safe/unsafe for the binary form)


def explanation(judge_name: str, scheme: Scheme, prediction: Prediction) -> str:
    display = scheme.label(prediction.label).display
    return (f"Label from the distilled offline judge '{judge_name}' (not the online teacher): "
            f"{display}, probability {prediction.confidence:.2f}.")


def schema_answer(schema: dict, scheme: Scheme, prediction: Prediction, judge_name: str) -> Answer:
    """JSON filling a response_format schema with fields label / label_str / explanation."""
    props = schema.get("properties")
    if not isinstance(props, dict):
        raise RequestError(400, "response_format json_schema has no properties", param="response_format")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(p, dict) for p in props.values()):
        raise RequestError(400, "response_format json_schema: properties must be objects and required a list",
                           param="response_format")
    forms, out, used = label_forms(scheme), {}, None
    for field, prop in props.items():
        if field == "explanation":
            out[field] = explanation(judge_name, scheme, prediction)
            continue
        if field not in FIELD_FORMS:
            if field in required:
                raise RequestError(400, f"response_format field {field!r} is not one the judge fills "
                                        "(label, label_str, explanation)", param="response_format")
            continue
        form = next((f for f in FIELD_FORMS[field] if _fits(prop, forms[f](prediction.label))), None)
        if form is None:
            raise RequestError(400, f"response_format field {field!r} accepts {prop.get('enum', prop.get('type'))}, "
                                    f"which fits none of the judge's labels ({', '.join(scheme.classes)})",
                               param="response_format")
        out[field] = forms[form](prediction.label)
        used = used or form
    return Answer(json.dumps(out, ensure_ascii=False), used or "display", prediction.label)


def compose_answer(chat: ChatRequest, extraction: Extraction, scheme: Scheme, prediction: Prediction,
                   judge_name: str) -> Answer:
    """JSON when asked for (response_format, or a template that says JSON), else the word the prompt asks for."""
    fmt = chat.response_format or {}
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") or {} if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise RequestError(400, "response_format json_schema must be an object with a schema object",
                               param="response_format")
        return schema_answer(schema, scheme, prediction, judge_name)
    template = extraction.template  # decide from the template, never from the judged content
    if fmt.get("type") == "json_object" or re.search(r"\bjson\b", template, re.I):
        schema = {"properties": {"label": {}, "label_str": {"type": "string"}, "explanation": {}}}
        return schema_answer(schema, scheme, prediction, judge_name)
    form = ("yes_no" if extraction.rule == "harmbench"
            else "binary" if extraction.rule in ("mmsafetybench", "jailbreakbench") or ASKS_SAFE_WORD.search(template)
            else None)
    if form:
        word = side(scheme, prediction, form)
        return Answer(word, form, word)
    return Answer(scheme.label(prediction.label).display, "display", prediction.label)


def side(scheme: Scheme, prediction: Prediction, form: str) -> str:
    """The predicted label's side of the safe / unsafe split, written in `form` (safe/unsafe or Yes/No).

    The side of the label, not the side with more probability in total: a three-class judge whose
    label is "unsafe" at 0.4 answers unsafe, as `judge score` labels it.
    """
    return str(label_forms(scheme)[form](prediction.label))


def word_probs(scheme: Scheme, prediction: Prediction, form: str) -> dict[str, float]:
    """Probability of each written form of the label (safe/unsafe sums the labels behind each word)."""
    write = label_forms(scheme)[form]
    out: dict[str, float] = {}
    for label, p in prediction.probs.items():
        out[str(write(label))] = out.get(str(write(label)), 0.0) + p
    return out


def logprobs_block(scheme: Scheme, prediction: Prediction, answer: Answer, top: int) -> dict:
    """OpenAI's logprobs for the one label token, from the student's (calibrated) probabilities."""
    probs = word_probs(scheme, prediction, answer.form)

    def entry(token: str, p: float) -> dict:
        return {"token": token, "logprob": math.log(p) if p > 0 else MIN_LOGPROB, "bytes": list(token.encode())}

    token = answer.label if answer.form in SIDE_FORMS else str(label_forms(scheme)[answer.form](answer.label))
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:max(0, top)]
    return {"content": [{**entry(token, probs[token]), "top_logprobs": [entry(t, p) for t, p in ranked]}],
            "refusal": None}


def approx_tokens(text: str) -> int:
    """Usage must be present; about four characters a token is what clients expect of English."""
    return math.ceil(len(text) / 4)


def probe_reply(judge_name: str, scheme: Scheme) -> str:
    """What a health probe ("hello") gets: who answers and what it expects, in words no parser reads as a label.

    The judge's name is left out when it contains a label word (a judge called "safe-judge"), and
    every candidate is checked against all the ways the scheme writes a label.
    """
    words = {"safe", "unsafe", "yes", "no"}
    for label in scheme.labels:
        words.update(w.lower() for w in (label.name, label.display, *label.aliases) if w)
    expects = ("It grades responses: send a judge prompt with the response filled in (the VLSBench, VLMEvalKit, "
               "HarmBench or JailbreakBench template, or one matching --pattern).")
    for text in (f"judge serve: offline distilled judge '{judge_name}' is up. {expects}",
                 f"judge serve: offline distilled judge is up. {expects}", "judge serve is up."):
        lowered = text.lower()
        if not any(re.search(rf"\b{re.escape(w)}\b" if w in ("yes", "no") else re.escape(w), lowered) for w in words):
            return text
    return "..."  # a scheme whose labels are everyday words; still not a label


def moderation_texts(value: object) -> list[str]:
    """OpenAI moderation ``input``: a string, a list of strings, or one list of text / image parts."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return ["\n".join(part["text"] for part in value if part.get("type") == "text" and isinstance(part.get("text"), str))]
    raise RequestError(400, "input must be a string, a list of strings, or a list of text / image_url parts",
                       param="input")


# --- the app -----------------------------------------------------------------------------------

def create_app(judge: Judge, *, name: str | None = None, api_key: str | None = None,
               max_request_bytes: int = MAX_REQUEST_BYTES, patterns: Sequence[str | re.Pattern] = (),
               max_batch: int = MAX_BATCH, batch_wait_ms: float = BATCH_WAIT_MS,
               log_content: bool = False) -> FastAPI:
    """The FastAPI app serving `judge`. ``app.state.batcher.stats`` counts requests and batches."""
    judge_name = name or judge.meta.get("name") or judge.path.resolve().name
    compiled = compile_patterns(patterns)
    batcher = MicroBatcher(judge, max_batch=max_batch, wait_ms=batch_wait_ms)
    token = api_key.encode() if api_key else None
    created = int(time.time())
    probe = probe_reply(judge_name, judge.scheme)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    def check_key(request: Request) -> None:
        if token is None:
            return
        kind, _, given = request.headers.get("authorization", "").partition(" ")
        if kind.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise RequestError(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                               code="invalid_api_key")

    app = FastAPI(title="judge", lifespan=lifespan, dependencies=[Depends(check_key)],
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.batcher, app.state.name = batcher, judge_name

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        log.info("%s %s -> %d: %s", request.method, request.url.path, exc.status, exc.message)
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, f"invalid request: {exc.errors()[0]['msg']}")

    @app.get("/v1/models")
    @app.get("/models", include_in_schema=False)  # a base URL set without /v1
    async def models() -> dict:
        return {"object": "list", "data": [{"id": judge_name, "object": "model", "created": created,
                                            "owned_by": "judge"}]}

    @app.post("/v1/chat/completions")
    @app.post("/chat/completions", include_in_schema=False)  # a base URL set without /v1
    async def chat_completions(request: Request) -> dict:
        started = time.perf_counter()
        chat = parse_request(await read_body(request, max_request_bytes))
        text, has_image = prompt_text(chat.messages)
        try:
            found = extract(text, patterns=compiled, has_image=has_image)
        except ExtractionError as exc:
            if not is_health_probe(text) or (chat.response_format or {}).get("type") in ("json_schema", "json_object"):
                raise RequestError(400, str(exc), param="messages", code="unparsable_prompt") from None
            log.info("health probe (%d characters, no judge prompt) answered", len(text))
            return completion(chat, text, {"role": "assistant", "content": probe, "refusal": None}, None)
        prediction = await batcher.predict(Record(id=uuid.uuid4().hex, question=found.question,
                                                  response=found.response, scenario=found.scenario, source="serve"))
        answer = compose_answer(chat, found, judge.scheme, prediction, judge_name)
        logprobs = logprobs_block(judge.scheme, prediction, answer, chat.top_logprobs or 0) if chat.logprobs else None
        log.info("scored rule=%s scenario=%s image=%s label=%s p=%.3f in %.1f ms", found.rule, found.scenario,
                 found.has_image, prediction.label, prediction.confidence, 1000 * (time.perf_counter() - started))
        if log_content:
            log.info("question=%r response=%r answer=%r", found.question, found.response, answer.content)
        return completion(chat, text, {"role": "assistant", "content": answer.content, "refusal": None}, logprobs)

    def completion(chat: ChatRequest, text: str, message: dict, logprobs: dict | None) -> dict:
        choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "stop"}
        prompt_tokens, completion_tokens = approx_tokens(text), approx_tokens(message["content"])
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
                "model": judge_name, "system_fingerprint": None,
                "choices": [{**choice, "index": i} for i in range(max(1, chat.n or 1))],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    @app.post("/v1/moderations")
    @app.post("/moderations", include_in_schema=False)  # a base URL set without /v1
    async def moderations(request: Request) -> dict:
        try:
            body = json.loads(await read_body(request, max_request_bytes))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RequestError(400, "invalid request: the body is not JSON") from None
        if not isinstance(body, dict) or "input" not in body:
            raise RequestError(400, "invalid request: input is required", param="input")
        texts = moderation_texts(body["input"])
        predictions = await asyncio.gather(*(batcher.predict(Record(id=uuid.uuid4().hex, response=t, source="serve"))
                                             for t in texts))
        results = []
        for prediction in predictions:
            verdict = side(judge.scheme, prediction, "binary")
            results.append({"flagged": verdict == "unsafe",
                            "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
                            "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0),
                            "category_applied_input_types": {c: [] for c in MODERATION_CATEGORIES},
                            "judge": {"label": prediction.label, "verdict": verdict,
                                      "probs": {k: round(v, 6) for k, v in prediction.probs.items()}}})
        log.info("moderated %d input(s): %d flagged", len(results), sum(r["flagged"] for r in results))
        return {"id": f"modr-{uuid.uuid4().hex}", "model": judge_name, "results": results}

    return app


@contextmanager
def running(app: FastAPI, host: str = DEFAULT_HOST, port: int = 0) -> Iterator[str]:
    """Serve `app` from a background thread (tests, benchmarks, notebooks); yields the base URL ending in /v1."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the judge server failed to start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def serve(judge_path: str | Path, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, api_key: str | None = None,
          log_content: bool = False, patterns: Sequence[str] = (), **options) -> None:
    """Load the judge and serve it until interrupted (what `judge serve` runs)."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = create_app(Judge.load(judge_path), api_key=api_key, log_content=log_content, patterns=patterns, **options)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("listening on %s without --api-key: anyone who can reach this port can use the judge", host)
    base = f"http://{host}:{port}/v1"
    log.info("serving %r: OPENAI_BASE_URL=%s (VLMEvalKit: OPENAI_API_BASE=%s/chat/completions LOCAL_LLM=%s)",
             app.state.name, base, base, app.state.name)
    uvicorn.run(app, host=host, port=port, log_level="info")
