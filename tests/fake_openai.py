"""A fake OpenAI-compatible server on 127.0.0.1 for judge tests and the judge benchmark.

Serves ``GET /v1/models`` and ``POST /v1/chat/completions`` from a thread. What it answers for a
question is read from the ground-truth name in the prompt, which carries directives:
``lvl=<level key>`` (the verdict to return), ``401x<n>`` / ``429x<n>`` / ``500x<n>`` (fail the first n attempts),
``timeoutx<n>`` (stall past the client's timeout the first n attempts), ``malformed``, ``offlabel``
and ``always500``. With ``healthy = True`` every directive but ``lvl=`` is ignored. Every request is
counted server-side (``requests``: path -> count, ``bodies``: the completion request bodies).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LABELS = {"strongly_known": "Strongly Known", "known": "Known", "weakly_unknown": "Weakly Unknown",
          "unknown": "Unknown"}


class FakeOpenAI:
    def __init__(self, model: str = "judge-model", latency: float = 0.0, stall: float = 1.0):
        self.model, self.latency, self.stall = model, latency, stall
        self.healthy = False
        self.requests: Counter = Counter()
        self.attempts: Counter = Counter()  # per ground-truth name
        self.bodies: list[dict] = []
        self.auth: list[str] = []
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                with fake._lock:
                    fake.requests[self.path] += 1
                if self.path.rstrip("/") != "/v1/models":
                    return self._send(404, {"error": {"message": "not found"}})
                self._send(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "created": 0,
                                                             "owned_by": "test"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake._lock:
                    fake.requests[self.path] += 1
                    fake.bodies.append(body)
                    fake.auth.append(self.headers.get("Authorization", ""))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                user = body["messages"][-1]["content"]
                name = re.search(r"Ground truth landmark: (.*)", user).group(1)
                with fake._lock:
                    fake.attempts[name] += 1
                    attempt = fake.attempts[name]
                if fake.latency:
                    time.sleep(fake.latency)
                level = re.search(r"lvl=(\w+)", name)
                content = json.dumps({"level": LABELS[level.group(1)] if level else "Unknown", "explanation": "ok"})
                if not fake.healthy:
                    fail = re.search(r"(401|429|500|timeout)x(\d)", name)
                    if fail and attempt <= int(fail.group(2)):
                        if fail.group(1) == "timeout":
                            time.sleep(fake.stall)
                            return self._send(200, fake.completion(content))
                        return self._send(int(fail.group(1)), {"error": {"message": "injected"}})
                    if "always500" in name:
                        return self._send(500, {"error": {"message": "injected"}})
                    if "malformed" in name:
                        content = "I would say it is Known."
                    if "offlabel" in name:
                        content = json.dumps({"level": "Partially Known", "explanation": "x"})
                self._send(200, fake.completion(content))

            def _send(self, code: int, obj: dict):
                data = json.dumps(obj).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "1")  # keeps the client's backoff short in tests
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default 5 makes concurrent clients wait out SYN retries

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def completion(self, content: str) -> dict:
        return {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}}

    @property
    def completions(self) -> int:
        return self.requests["/v1/chat/completions"]

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
