"""Fake OpenAI-compatible servers on 127.0.0.1 for the judge and MGLD annotator tests and the judge benchmark.

``FakeOpenAI`` serves ``GET /v1/models`` and ``POST /v1/chat/completions`` from a thread, answers 404
for an unknown path or model, and counts what it sees: ``requests`` (path -> count), ``bodies`` (the
completion request bodies), ``auth`` (the Authorization headers). A subclass decides each chat reply
in ``reply(body)``: ``(200, assistant content)`` or ``(error status, message)``.

``JudgeServer`` answers judge prompts from directives in the ground-truth name: ``lvl=<level key>``
(the verdict to return), ``401x<n>`` / ``429x<n>`` / ``500x<n>`` (fail the first n attempts),
``timeoutx<n>`` (stall past the client's timeout the first n attempts), ``malformed``, ``offlabel``
and ``always500``. With ``healthy = True`` every directive but ``lvl=`` is ignored.

Misbehaving servers: a reply may also be a :class:`Raw` (status, body bytes, content type), sent as
is. :func:`misbehave` maps a mode name to such a reply (a 200 with an HTML or non-JSON body, JSON of
the wrong schema, no choices, a choice without a message, a null body, a cut body; a 400 or 500 error
and a 200 answer that echo the request's Authorization header); ``JudgeServer`` answers them for
the directive ``bad=<mode>`` in the ground-truth name.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHAT = "/v1/chat/completions"


@dataclass(frozen=True)
class Raw:
    """A reply sent byte for byte: whatever a broken or hostile server might send."""

    status: int
    body: bytes
    content_type: str = "application/json"


def _completion(model: str, text: str) -> dict:
    return {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}


MODES = ("html", "nonjson", "wrongschema", "nochoices", "nomessage", "null", "cut", "badusage",
         "echo400", "echo500", "echo200")


def misbehave(mode: str, model: str, auth: str) -> Raw:
    """The misbehaving reply ``mode`` (one of MODES); ``auth`` is the request's Authorization header."""
    good = json.dumps(_completion(model, json.dumps({"level": "Known", "explanation": "x"}))).encode()
    replies = {
        "html": Raw(200, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
        "nonjson": Raw(200, b"this is not json {"),
        "wrongschema": Raw(200, json.dumps({"result": "Known"}).encode()),
        "nochoices": Raw(200, json.dumps({**_completion(model, "x"), "choices": []}).encode()),
        "nomessage": Raw(200, json.dumps({**_completion(model, "x"), "choices": [{"index": 0}]}).encode()),
        "null": Raw(200, b"null"),
        "cut": Raw(200, good[: len(good) // 2]),
        "badusage": Raw(200, json.dumps({**_completion(model, '{"level": "Known", "explanation": "x"}'),
                                         "usage": {"prompt_tokens": "many"}}).encode()),
        "echo400": Raw(400, json.dumps({"error": {"message": f"bad request; you sent Authorization: {auth}"}}).encode()),
        "echo500": Raw(500, f"upstream failed for Authorization: {auth}".encode(), "text/plain"),
        "echo200": Raw(200, json.dumps(_completion(model, f"your header was {auth}")).encode()),
    }
    return replies[mode]


class FakeOpenAI:
    def __init__(self, model: str, latency: float = 0.0, stall: float = 1.0):
        self.model, self.latency, self.stall = model, latency, stall
        self.requests: Counter = Counter()
        self.bodies: list[dict] = []
        self.auth: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                with fake.lock:
                    fake.requests[self.path] += 1
                    fake.auth.append(self.headers.get("Authorization", ""))
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, {"error": {"message": "not found"}})
                self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "created": 0,
                                                             "owned_by": "test"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests[self.path] += 1
                    fake.bodies.append(body)
                    fake.auth.append(self.headers.get("Authorization", ""))
                if self.path != CHAT or body.get("model") != fake.model:
                    return self._send(404, {"error": {"message": f"not found: {self.path} {body.get('model')}"}})
                if fake.latency:
                    time.sleep(fake.latency)
                reply = fake.reply(body, self.headers.get("Authorization", ""))
                if isinstance(reply, Raw):
                    return self._send(reply.status, reply.body, reply.content_type)
                status, text = reply
                if status != 200:
                    return self._send(status, {"error": {"message": text}})
                self._send(200, _completion(fake.model, text))

            def _send(self, code: int, obj: dict | bytes, content_type: str = "application/json"):
                data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "1")  # keeps the client's backoff short in tests
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout)
                    pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 makes concurrent clients wait out SYN retries

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, body: dict, auth: str = "") -> tuple[int, str] | Raw:
        raise NotImplementedError

    @property
    def completions(self) -> int:
        return self.requests[CHAT]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


LABELS = {"strongly_known": "Strongly Known", "known": "Known", "weakly_unknown": "Weakly Unknown",
          "unknown": "Unknown"}


class JudgeServer(FakeOpenAI):
    def __init__(self, model: str = "judge-model", latency: float = 0.0, stall: float = 1.0):
        super().__init__(model, latency, stall)
        self.healthy = False
        self.attempts: Counter = Counter()  # per ground-truth name

    def reply(self, body: dict, auth: str = "") -> tuple[int, str] | Raw:
        name = re.search(r"Ground truth landmark: (.*)", body["messages"][-1]["content"]).group(1)
        with self.lock:
            self.attempts[name] += 1
            attempt = self.attempts[name]
        level = re.search(r"lvl=(\w+)", name)
        content = json.dumps({"level": LABELS[level.group(1)] if level else "Unknown", "explanation": "ok"})
        if self.healthy:
            return 200, content
        fail = re.search(r"(401|429|500|timeout)x(\d)", name)
        if fail and attempt <= int(fail.group(2)):
            if fail.group(1) == "timeout":
                time.sleep(self.stall)
                return 200, content
            return int(fail.group(1)), "injected"
        bad = re.search(r"bad=(\w+)", name)
        if bad:
            return misbehave(bad.group(1), self.model, auth)
        if "always500" in name:
            return 500, "injected"
        if "malformed" in name:
            return 200, "I would say it is Known."
        if "offlabel" in name:
            return 200, json.dumps({"level": "Partially Known", "explanation": "x"})
        return 200, content
