"""The teacher: one OpenAI-compatible chat request per record, and a strict reading of its reply.

Everything here is pure (no network, no disk writes) except `make_client`, so the online path and
the Batch API path build the same request body and read replies with the same parser.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import mimetypes
import os
import re
from dataclasses import dataclass
from pathlib import Path

from judge.errors import InputError
from judge.records import Record
from judge.schemes import Scheme

RUBRIC_DIR = Path(__file__).parent / "rubrics"
BUILTIN_RUBRICS = ("vlsbench", "mmsafetybench")
PLACEHOLDERS = ("question", "response", "category", "sub_category", "scenario", "image_description")
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # OpenAI's per-image limit
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
IMAGE_TOKENS = 765  # a 1024x1024 image at detail "auto" on gpt-4o; only for estimates
REPLY_TOKENS = 80  # label + label_str + a short explanation; only for estimates
TOP_LOGPROBS = 5

# USD per million (input, output) tokens, standard tier. Override with TeacherConfig.prices / --price.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-2024-11-20": (2.50, 10.00),
    "gpt-4o-2024-08-06": (2.50, 10.00),
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o-mini-2024-07-18": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4-turbo": (10.00, 30.00),
}
BATCH_DISCOUNT = 0.5  # the Batch API bills half
DEFAULT_MODEL = "gpt-4o-2024-08-06"


def same_model(named: str, recorded: str) -> bool:
    """Whether the model a user names is the one recorded, which the API reports as the dated snapshot
    behind an alias (gpt-4o -> gpt-4o-2024-08-06)."""
    return recorded == named or re.fullmatch(re.escape(named) + r"-\d{4}-\d{2}-\d{2}", recorded) is not None


def get_key(explicit: str | None = None, env: str = "OPENAI_API_KEY", *, base_url: str | None = None) -> str:
    """The API key: the explicit value (a flag), else the environment variable.

    A custom ``base_url`` (vLLM, a local server) may need no key, so a placeholder is used there.
    """
    if explicit:
        return explicit
    if os.environ.get(env):
        return os.environ[env]
    if base_url:
        return "EMPTY"
    raise InputError(f"no OpenAI API key: pass --api-key or set {env}")


def endpoint(base_url: str | None) -> str | None:
    """The endpoint a client calls: the given URL, else OPENAI_BASE_URL, else None (OpenAI itself)."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or None


def make_client(*, api_key: str | None, base_url: str | None, max_retries: int, timeout: float):
    """An AsyncOpenAI client; its own retries back off exponentially and honour Retry-After."""
    from openai import AsyncOpenAI, DefaultAsyncHttpxClient

    base_url = endpoint(base_url)
    return AsyncOpenAI(api_key=get_key(api_key, base_url=base_url), base_url=base_url,
                       max_retries=max_retries, timeout=timeout,
                       http_client=DefaultAsyncHttpxClient(event_hooks={"response": [_no_retry_without_quota]}))


async def _no_retry_without_quota(response) -> None:
    """A 429 for an exhausted quota is no rate limit: the SDK would retry it max_retries times for nothing,
    so it is told not to (its x-should-retry header); other 429s are still retried."""
    if response.status_code != 429:
        return
    await response.aread()
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):  # not a JSON object
        return
    if isinstance(error, dict) and error.get("code") == "insufficient_quota":
        response.headers["x-should-retry"] = "false"


def permanent_error(exc: Exception) -> str | None:
    """The server's reason when ``exc`` would fail every request alike (bad key, no access, unknown
    model, no quota), so the run should stop; None for a failure of this request only."""
    import openai

    quota = isinstance(exc, openai.RateLimitError) and exc.code == "insufficient_quota"
    if not (quota or isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError))):
        return None
    message = exc.body.get("message") if isinstance(exc.body, dict) else None
    return f"{exc.status_code} {type(exc).__name__}: {message or exc.message}"


@dataclass(frozen=True)
class Rubric:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def fill(self, record: Record) -> str:
        """Substitute {question}, {response}, ... and nothing else, so a template with JSON braces runs verbatim."""
        values = {name: str(getattr(record, name) or "") for name in PLACEHOLDERS}
        return re.sub(r"\{(" + "|".join(PLACEHOLDERS) + r")\}", lambda m: values[m.group(1)], self.text)


def load_rubric(name: str = "vlsbench", prompt_file: str | Path | None = None) -> Rubric:
    """A built-in rubric by name, or a user's template file with {question} and {response} placeholders."""
    if prompt_file is not None:
        path = Path(prompt_file)
        if not path.is_file():
            raise InputError("no such prompt file", path=path)
        text = path.read_text(encoding="utf-8")
        if "{response}" not in text:
            raise InputError("prompt file has no {response} placeholder", path=path)
        return Rubric(name=path.name, text=text)
    if name not in BUILTIN_RUBRICS:
        return load_rubric(prompt_file=name)
    return Rubric(name=name, text=(RUBRIC_DIR / f"{name}.txt").read_text(encoding="utf-8"))


def find_image(record: Record) -> Path:
    """The record's image: as written, else relative to the file the record came from."""
    path = Path(record.image_path)
    if not path.is_absolute() and not path.is_file() and record.source:
        path = Path(record.source).parent / path
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {record.image_path}")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise ValueError(f"image {record.image_path} is {size / 2**20:.1f} MiB, over the {MAX_IMAGE_BYTES // 2**20} MiB limit")
    if mimetypes.guess_type(path.name)[0] not in IMAGE_TYPES:
        raise ValueError(f"image {record.image_path}: not a PNG, JPEG, GIF or WebP file")
    return path


def data_url(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def response_format(scheme: Scheme) -> dict:
    """Structured output: {label, label_str, explanation}, label first so its token is easy to find."""
    codes = [label.code for label in scheme.labels]
    label = {"type": "integer", "enum": codes} if None not in codes else {"type": "string", "enum": list(scheme.classes)}
    return {"type": "json_schema", "json_schema": {"name": "safety_label", "strict": True, "schema": {
        "type": "object",
        "properties": {"label": label,
                       "label_str": {"type": "string", "enum": [l.display or l.name for l in scheme.labels]},
                       "explanation": {"type": "string"}},
        "required": ["label", "label_str", "explanation"],
        "additionalProperties": False,
    }}}


def request_body(record: Record, rubric: Rubric, scheme: Scheme, *, model: str, temperature: float,
                 image_url: str | None = None, logprobs: bool = True) -> dict:
    """The chat-completions body for one record; ``image_url`` is a data URL or a stand-in for hashing."""
    content: list[dict] = [{"type": "text", "text": rubric.fill(record)}]
    if image_url is not None:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    body = {"model": model, "temperature": temperature, "messages": [{"role": "user", "content": content}],
            "response_format": response_format(scheme)}
    if logprobs:
        body.update(logprobs=True, top_logprobs=TOP_LOGPROBS)
    return body


def estimate_tokens(body: dict) -> int:
    """Rough prompt tokens (4 characters a token, a fixed cost per image); real costs use the usage field."""
    tokens = 8
    for part in body["messages"][0]["content"]:
        tokens += len(part["text"]) // 4 if part["type"] == "text" else IMAGE_TOKENS
    return tokens


def price_of(model: str, prices: dict | None = None) -> tuple[float, float] | None:
    table = {**PRICES, **{k: tuple(v) for k, v in (prices or {}).items()}}
    return table.get(model)


def parse_price(text: str) -> tuple[float, float]:
    """'2.5,10' -> (2.5, 10.0): USD per million input and output tokens."""
    try:
        prompt, completion = (float(part) for part in text.split(","))
        if not (0 <= prompt < math.inf and 0 <= completion < math.inf):
            raise ValueError(text)
    except ValueError:
        raise InputError(f"--price takes USD per 1M input and output tokens as IN,OUT, each 0 or more (e.g. 2.5,10), "
                         f"got {text!r}") from None
    return prompt, completion


def cost_of(price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
    if price is None:
        return 0.0
    cost = (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6
    return cost * BATCH_DISCOUNT if batch else cost


@dataclass
class Reply:
    """What one completion said. status: ok | teacher_refused | parse_error."""

    status: str
    label: str | None
    probs: dict[str, float] | None
    explanation: str | None
    raw: str | None
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


def parse_label_json(text: str, scheme: Scheme) -> tuple[str, str]:
    """(label, explanation) from the reply text, or ValueError. Strict: one JSON object, all three keys, agreeing."""
    data = json.loads(text)
    if not isinstance(data, dict) or set(data) != {"label", "label_str", "explanation"}:
        raise ValueError("expected exactly the keys label, label_str, explanation")
    label = scheme.parse(data["label"])
    if scheme.try_parse(data["label_str"]) != label:
        raise ValueError(f"label {data['label']!r} and label_str {data['label_str']!r} disagree")
    if not isinstance(data["explanation"], str):
        raise ValueError("explanation is not a string")
    return label, data["explanation"]


def label_probs(logprobs: dict | None, scheme: Scheme) -> dict[str, float] | None:
    """Per-class probabilities from the top logprobs of the token right after '"label":', when returned."""
    text = ""
    for entry in (logprobs or {}).get("content") or []:
        if re.search(r'"label"\s*:\s*"?$', text):
            mass = dict.fromkeys(scheme.classes, 0.0)
            for top in entry.get("top_logprobs") or [entry]:
                label = scheme.try_parse(top["token"].strip().strip('"'))
                if label is not None:
                    if not top["logprob"] <= 0:  # math.exp would overflow, or make a "probability" above 1
                        raise ValueError(f"logprob {top['logprob']!r} is not a log probability")
                    mass[label] += math.exp(top["logprob"])
            total = sum(mass.values())
            return {k: v / total for k, v in mass.items()} if total > 0 else None
        text += entry.get("token", "")
    return None


def parse_reply(completion: dict, scheme: Scheme) -> Reply:
    """Read a chat completion (as a dict, from the SDK or a batch output line); never raises on bad content."""
    usage = completion.get("usage") or {}
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content = message.get("content")
    base = dict(model=completion.get("model"), prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0))
    if message.get("refusal") or choice.get("finish_reason") == "content_filter":
        reason = message.get("refusal") or "content filter"
        return Reply("teacher_refused", None, None, None, content, **base, error=f"teacher refused: {reason}")
    try:
        label, explanation = parse_label_json(content or "", scheme)
        probs = label_probs(choice.get("logprobs"), scheme)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return Reply("parse_error", None, None, None, content, **base, error=f"unparseable reply: {exc}")
    return Reply("ok", label, probs, explanation, content, **base)
