"""Fake OpenAI-compatible servers on 127.0.0.1 for the judge and MGLD annotator tests and the judge benchmark.

``FakeOpenAI`` serves ``GET /v1/models`` and ``POST /v1/chat/completions`` from a thread, answers 404
for an unknown path or model, and counts what it sees: ``requests`` (path -> count), ``bodies`` (the
completion request bodies), ``auth`` (the Authorization headers). A subclass decides each chat reply
in ``reply(body)``: ``(200, assistant content)`` or ``(error status, message)``.

``JudgeServer`` answers judge prompts from directives in the ground-truth name: ``lvl=<level key>``
(the verdict to return), ``401x<n>`` / ``429x<n>`` / ``500x<n>`` (fail the first n attempts),
``timeoutx<n>`` (stall past the client's timeout the first n attempts), ``malformed``, ``offlabel``
and ``always500``. With ``healthy = True`` every directive but ``lvl=`` is ignored.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CHAT = "/v1/chat/completions"


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
                status, text = fake.reply(body)
                if status != 200:
                    return self._send(status, {"error": {"message": text}})
                self._send(200, {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": fake.model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": text}}],
                                 "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}})

            def _send(self, code: int, obj: dict):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
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

    def reply(self, body: dict) -> tuple[int, str]:
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

    def reply(self, body: dict) -> tuple[int, str]:
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
        if "always500" in name:
            return 500, "injected"
        if "malformed" in name:
            return 200, "I would say it is Known."
        if "offlabel" in name:
            return 200, json.dumps({"level": "Partially Known", "explanation": "x"})
        return 200, content
