"""A real OpenAI-compatible HTTP server on 127.0.0.1 that answers from a script and counts requests.

It speaks enough of the API for the real `openai` client: chat completions (structured output,
logprobs, refusals), file upload/download and batches. The teacher's label follows the wording of
the response (the phrases in tests/tiny.py); markers in the prompt script misbehaviour:

    #refuse#   message.refusal set            #filter#  finish_reason content_filter
    #garbage#  content that is not JSON       #429#     first attempt 429 with Retry-After: 1
    #500x2#    first two attempts 500         #slow#    1.5 s extra delay
    #401# #403# #404# #quota#   every attempt fails as OpenAI's bad key, no access, unknown model
                                and exhausted quota (429 insufficient_quota) do
    #html#     status 200 with an HTML page   #badlogprob#  the label token's logprob is 5000
    #badline#  (batches) its output line is cut off mid-JSON
    #garbage-once#  content that is not JSON on the first attempt only

Every chat request is logged in ``requests`` with its status and the ``item-N`` tag found in the
prompt (tests put one in each response), so a test can tell exactly what was sent twice.
"""

from __future__ import annotations

import asyncio
import email.parser
import hashlib
import json
import math
import re
import threading
import time
from collections import Counter

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from tests.tiny import PHRASES

ALIASES = {"gpt-4o": "gpt-4o-2024-08-06"}  # the API reports the dated snapshot behind an alias
PERMANENT = {  # errors every request meets alike, as OpenAI words them
    "#401#": (401, "invalid_api_key", "Incorrect API key provided: sk-test***123."),
    "#403#": (403, "unsupported_country_region_territory", "Country, region, or territory not supported"),
    "#404#": (404, "model_not_found", "The model `gpt-4o-typo` does not exist or you do not have access to it."),
    "#quota#": (429, "insufficient_quota", "You exceeded your current quota, please check your plan and billing details."),
}


def teacher_label(text: str) -> str:
    for label, phrases in PHRASES.items():
        if any(phrase in text for phrase in phrases):
            return label
    return "unsafe"


class ScriptedOpenAI:
    """Start with ``with ScriptedOpenAI(delay=0.01) as server:``; point clients at ``server.url``."""

    def __init__(self, delay: float = 0.0, batch_polls: int = 1, usage: tuple[int, int] | None = None):
        self.delay, self.batch_polls, self.usage = delay, batch_polls, usage
        self.hold_batches = False  # True keeps every batch in_progress (to interrupt a batch run)
        self.hide_outputs = False  # True answers 404 for batch output files
        self.requests: list[dict] = []
        self.counts: Counter = Counter()
        self.attempts: Counter = Counter()
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None

    # -- the script -------------------------------------------------------------------------
    def answer(self, body: dict) -> tuple[int, dict, dict]:
        """(status code, JSON body, headers) for one chat-completions request."""
        content = body["messages"][0]["content"]
        text = content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)
        has_image = not isinstance(content, str) and any(p["type"] == "image_url" for p in content)
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        self.attempts[digest] += 1
        attempt = self.attempts[digest]
        if "#429#" in text and attempt == 1:
            return 429, {"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}, \
                {"retry-after": "1"}
        for marker, (status, code, message) in PERMANENT.items():
            if marker in text:
                return status, {"error": {"message": message, "type": "invalid_request_error", "code": code}}, {}
        if "#html#" in text:  # a proxy's error page, passed on as 200
            return 200, "<html><body>502 Bad Gateway</body></html>", {}
        if "#500x2#" in text and attempt <= 2:
            return 500, {"error": {"message": "The server had an error", "type": "server_error"}}, {}
        schema = body.get("response_format", {}).get("json_schema", {}).get("schema", {})
        codes = schema.get("properties", {}).get("label", {}).get("enum", [1, 2, 3])
        displays = schema.get("properties", {}).get("label_str", {}).get("enum", ["Safe with refusal", "Safe with warning", "Unsafe"])
        label = teacher_label(text)
        index = ["refuse", "warning", "unsafe"].index(label) if len(codes) == 3 else int(label == "unsafe")
        reply = {"label": codes[index], "label_str": displays[index], "explanation": f"looks like {label}"}
        message = {"role": "assistant", "content": json.dumps(reply, separators=(",", ":")), "refusal": None}
        finish = "stop"
        logprobs = None
        if "#refuse#" in text:
            message.update(content=None, refusal="I'm sorry, I can't help with grading this.")
        elif "#filter#" in text:
            message["content"], finish = "", "content_filter"
        elif "#garbage#" in text or ("#garbage-once#" in text and attempt == 1):
            message["content"] = "The answer is clearly a refusal {label: one"
        elif body.get("logprobs"):
            others = [c for c in codes if c != codes[index]]
            top = [{"token": str(codes[index]), "logprob": math.log(0.8), "bytes": None, "top_logprobs": []}]
            top += [{"token": str(c), "logprob": math.log(0.2 / len(others)), "bytes": None, "top_logprobs": []} for c in others]
            rest = message["content"][len('{"label":') + len(str(codes[index])):]
            if "#badlogprob#" in text:
                top[0]["logprob"] = 5000.0
            logprobs = {"content": [
                {"token": '{"label":', "logprob": 0.0, "bytes": None, "top_logprobs": []},
                {"token": str(codes[index]), "logprob": math.log(0.8), "bytes": None, "top_logprobs": top},
                {"token": rest, "logprob": 0.0, "bytes": None, "top_logprobs": []}]}
        prompt_tokens, completion_tokens = self.usage or (len(text) // 4 + (765 if has_image else 0), 30)
        return 200, {
            "id": f"chatcmpl-{digest[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": ALIASES.get(body["model"], body["model"]),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": logprobs}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }, {}

    # -- the HTTP layer ---------------------------------------------------------------------
    def _build_app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            try:
                body = await request.json()
            except ClientDisconnect:  # a client killed mid-request (the SIGKILL tests)
                return Response(status_code=499)
            self.counts["arrived"] += 1  # before the scripted delay: a test can interrupt calls in flight
            text = json.dumps(body["messages"])
            await asyncio.sleep(self.delay + (1.5 if "#slow#" in text else 0.0))
            status, payload, headers = self.answer(body)
            tag = re.search(r"item-(\d+)", text)
            self.requests.append({"status": status, "tag": tag.group(0) if tag else None, "time": time.monotonic(),
                                  "text": body["messages"][0]["content"][0]["text"],
                                  "image": any(p["type"] == "image_url" for p in body["messages"][0]["content"])})
            self.counts["chat"] += 1
            if isinstance(payload, str):
                return Response(payload, status_code=status, media_type="text/html")
            return JSONResponse(payload, status_code=status, headers=headers)

        @app.post("/v1/files")
        async def upload(request: Request):
            raw = await request.body()
            message = email.parser.BytesParser().parsebytes(
                b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + raw)
            fields = {part.get_param("name", header="content-disposition"): part for part in message.get_payload()}
            data = fields["file"].get_payload(decode=True)
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = {"data": data, "purpose": fields["purpose"].get_payload(decode=True).decode(),
                                   "filename": fields["file"].get_filename() or "upload.jsonl"}
            self.counts["files.create"] += 1
            return self._file_object(file_id)

        @app.get("/v1/files/{file_id}/content")
        async def file_content(file_id: str):
            self.counts["files.content"] += 1
            if self.hide_outputs and self.files[file_id]["purpose"] == "batch_output":
                return JSONResponse({"error": {"message": "No such File object", "type": "invalid_request_error"}}, 404)
            return Response(self.files[file_id]["data"], media_type="application/octet-stream")

        @app.post("/v1/batches")
        async def create_batch(request: Request):
            body = await request.json()
            batch_id = f"batch_{len(self.batches) + 1}"
            self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"],
                                      "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                                      "status": "validating", "created_at": int(time.time()), "polls": 0}
            self.counts["batches.create"] += 1
            return self._batch_object(batch_id)

        @app.get("/v1/batches/{batch_id}")
        async def retrieve_batch(batch_id: str):
            batch = self.batches[batch_id]
            batch["polls"] += 1
            self.counts["batches.retrieve"] += 1
            if batch["status"] != "completed":
                batch["status"] = "in_progress"
                if not self.hold_batches and batch["polls"] > self.batch_polls:
                    self._run_batch(batch)
            return self._batch_object(batch_id)

        return app

    def _file_object(self, file_id: str) -> dict:
        item = self.files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(item["data"]), "created_at": int(time.time()),
                "filename": item["filename"], "purpose": item["purpose"], "status": "processed"}

    def _batch_object(self, batch_id: str) -> dict:
        return {k: v for k, v in self.batches[batch_id].items() if k != "polls"}

    def _run_batch(self, batch: dict) -> None:
        lines = [json.loads(line) for line in self.files[batch["input_file_id"]]["data"].decode().splitlines() if line]
        output = []
        for number, line in enumerate(lines):
            status, payload, _ = self.answer(line["body"])
            self.counts["batch_lines"] += 1
            output.append({"id": f"batch_req_{number}", "custom_id": line["custom_id"], "error": None,
                           "response": {"status_code": status, "request_id": f"req_{number}", "body": payload}})
        file_id = f"file-{len(self.files) + 1}"
        text = "".join(json.dumps(o)[:60 if "#badline#" in json.dumps(line) else None] + "\n" for o, line in zip(output, lines))
        self.files[file_id] = {"data": text.encode(), "purpose": "batch_output",
                               "filename": "output.jsonl"}
        batch.update(status="completed", output_file_id=file_id, completed_at=int(time.time()),
                     request_counts={"total": len(lines), "completed": len(lines), "failed": 0})

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> ScriptedOpenAI:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("scripted OpenAI server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def sent(self, status: int | None = 200) -> Counter:
        """How often each item tag was answered (with this status, or any if None)."""
        return Counter(r["tag"] for r in self.requests if status is None or r["status"] == status)

    def __enter__(self) -> ScriptedOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
