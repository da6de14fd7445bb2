"""The OpenAI-compatible chat client of every LLM call: MGLD annotation (paper 3.1, App. B.3) and
the four-level judge (paper 3.1, App. C). GPT-4o as in the paper, or a vLLM / Ollama server.

It sits at the package top level beside ``eeca.io`` because both ``eeca.mgld`` (the annotators)
and ``eeca.evaluate`` (the judge) use it, and imports flow one way (``config, io`` -> ``mgld``
-> ``evaluate``); it imports only the standard library, and ``openai`` (the ``annotate`` extra)
lazily, when a client is made. Built on the official ``openai`` client, adding what a run of
200k requests needs (the judge items in LESSONS hold for annotators too):

* :func:`normalize_base_url`: ``http://host:11434`` -> ``http://host:11434/v1``; a pasted
  endpoint (``.../v1/chat/completions``) is cut back to its API root.
* :func:`resolve_api_key`: the key comes only from an environment variable; local servers that
  need none get a dummy key (the client refuses to start without one).
* :func:`redact`: the one place secrets are removed from text: the configured keys, any
  ``Bearer ...`` and ``sk-...`` token. Every text that comes from a server passes through it (the
  message of every :class:`ChatError` / :class:`FatalChatError` and the text of every
  :class:`Completion`), and the command line applies it to every error it prints, so a server that
  echoes the Authorization header cannot put the key into a file or a log line.
* :meth:`ChatClient.health_check`: ``GET /v1/models`` once before the first request, failing fast
  with the served model names when the configured one is absent.
* :meth:`ChatClient.chat`: retries 408/409/429/5xx, timeouts and dropped connections with
  exponential backoff and jitter, honouring ``Retry-After``. The official client retries too, but
  with fixed module-level delays (0.5 s doubling to 8 s) that cannot be set per run and without
  telling the caller how often it retried; so its own retries are off (``max_retries=0``) and the
  policy lives here, configurable and counted. 401/403/404 raise :class:`FatalChatError` (no
  request can succeed: stop the run); any other failure raises :class:`ChatError` (this sample
  failed: record it, never guess). Any reply the client cannot read (a 200 with HTML or non-JSON,
  a body cut short, JSON of another schema, no choices, a choice without a message) is such a
  failure too, whatever exception the reading raised: the caller counts it and a rerun asks again.
* :class:`Usage`: thread-safe request / retry / token counters and the cost they imply.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

OPENAI_API = "https://api.openai.com/v1"
_ENDPOINTS = ("/chat/completions", "/completions", "/models")


_SECRETS: set[str] = set()  # the API keys read by resolve_api_key in this process
_TOKENS = re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+|\bsk-[A-Za-z0-9_\-]{6,}")


def redact(text: object) -> str:
    """``text`` without the configured API keys and without any ``Bearer ...`` or ``sk-...`` token."""
    out = str(text)
    for secret in sorted(_SECRETS, key=len, reverse=True):
        out = out.replace(secret, "[redacted]")
    return _TOKENS.sub(lambda m: f"{m.group(1)} [redacted]" if m.group(1) else "sk-[redacted]", out)


class ChatError(RuntimeError):
    """One sample's request failed for good (retries exhausted, or rejected as bad); message redacted."""

    def __init__(self, message: str):
        super().__init__(redact(message))


class FatalChatError(RuntimeError):
    """No request can succeed (bad key, unknown model, unreachable server): stop the run; message redacted."""

    def __init__(self, message: str):
        super().__init__(redact(message))


def normalize_base_url(url: str | None) -> str:
    """The API root of an OpenAI-compatible server, ending in ``/v1`` unless it has its own path."""
    if not url:
        return OPENAI_API
    text = url.strip()
    parts = urlsplit(text if "://" in text else f"http://{text}")
    path = parts.path.rstrip("/")
    for suffix in _ENDPOINTS:
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if not path:  # vLLM and Ollama serve the OpenAI API under /v1
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def resolve_api_key(base_url: str, env_var: str) -> str:
    """The key in ``$env_var``; a dummy for servers other than api.openai.com when it is unset."""
    key = os.environ.get(env_var, "").strip()
    if key:
        _SECRETS.add(key)
        return key
    if urlsplit(base_url).hostname == "api.openai.com":
        raise FatalChatError(f"{base_url} needs an API key: set the environment variable {env_var}")
    return "no-key-needed"  # vLLM / Ollama ignore the key, but the client requires one


@dataclass
class Usage:
    """Counters shared by worker threads; ``cost`` from per-million-token prices."""

    requests: int = 0
    retries: int = 0
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def cost(self, price_input_per_1m: float, price_output_per_1m: float) -> float:
        return (self.prompt_tokens * price_input_per_1m + self.completion_tokens * price_output_per_1m) / 1e6

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("requests", "retries", "reasks", "prompt_tokens",
                                              "completion_tokens", "cached")}


@dataclass(frozen=True)
class Completion:
    """The first choice of a reply: its text, why generation stopped ("length" = cut at
    ``max_tokens``) and the tokens the server counted."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class ChatClient:
    """Chat completions against one OpenAI-compatible server with a retry policy.

    Safe to share between threads (the official client is). ``usage`` counts every HTTP request
    (first tries and retries) and the tokens of every successful one.
    """

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 timeout_s: float = 120.0, max_retries: int = 6, backoff_base_s: float = 1.0,
                 backoff_max_s: float = 60.0, usage: Usage | None = None):
        try:
            import openai
        except ImportError as e:  # the optional "annotate" extra
            raise FatalChatError("OpenAI-compatible servers need the openai package: pip install 'eeca[annotate]'") from e
        self._openai = openai
        self.model = model
        self.base_url = normalize_base_url(base_url)
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.usage = usage if usage is not None else Usage()
        self._client = openai.OpenAI(base_url=self.base_url, api_key=resolve_api_key(self.base_url, api_key_env),
                                     timeout=timeout_s, max_retries=0)
        self._checked = False
        self._check_lock = threading.Lock()

    def health_check(self) -> list[str]:
        """The served model ids; raises :class:`FatalChatError` if the server is down or lacks ``model``.

        Runs once per client however many threads call it; later calls return at once.
        """
        with self._check_lock:
            if self._checked:
                return []
            try:
                served = sorted(str(m.id) for m in self._call(self._client.models.list))
            except ChatError as e:
                raise FatalChatError(f"{self.base_url}/models: health check failed: {e}") from None
            except Exception as e:  # a reply that is not a model list
                raise FatalChatError(f"{self.base_url}/models: health check failed: unreadable reply "
                                     f"({type(e).__name__}: {_short(str(e))})") from None
            if served and self.model not in served:
                raise FatalChatError(f"{self.base_url} does not serve model {self.model!r}; it serves: "
                                     f"{', '.join(served[:20])}")
            self._checked = True
            return served

    def chat(self, messages: list[dict], **params) -> Completion:
        """One chat completion (``params`` go to ``chat.completions.create``), retried per the policy."""
        resp = self._call(self._client.chat.completions.create, model=self.model, messages=messages, **params)
        usage = getattr(resp, "usage", None)
        tokens = {name: _count(getattr(usage, name, 0)) for name in ("prompt_tokens", "completion_tokens")}
        self.usage.add(**tokens)  # counted whatever the reply holds: the server bills them
        choices = getattr(resp, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise ChatError(f"unreadable reply: no choices in {_short(repr(resp))}")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if message is None or not isinstance(content, str | None):
            raise ChatError(f"unreadable reply: the first choice has no message text: {_short(repr(choices[0]))}")
        finish = getattr(choices[0], "finish_reason", None)
        return Completion(text=redact(content or ""), finish_reason=finish if isinstance(finish, str) else None,
                          **tokens)

    def _call(self, fn, **kwargs):
        openai = self._openai
        for attempt in range(self.max_retries + 1):
            self.usage.add(requests=1, retries=int(attempt > 0))
            try:
                return fn(**kwargs)
            except openai.APIStatusError as e:
                status, retry_after = e.status_code, _retry_after(e.response)
                body = e.body if isinstance(e.body, dict) else {}
                reason = f"HTTP {status}: {_short(body.get('message') or e.message)}"
                if status in (401, 403):
                    raise FatalChatError(f"{self.base_url}: {reason} (check the API key variable)") from None
                if status == 404:
                    raise FatalChatError(f"{self.base_url}: {reason} (unknown model or endpoint)") from None
                if not (status in (408, 409, 429) or status >= 500):
                    raise ChatError(reason) from None
            except openai.APITimeoutError:
                reason, retry_after = "request timed out", None
            except openai.APIConnectionError as e:
                reason, retry_after = f"connection error: {_short(str(e))}", None
            except openai.APIError as e:  # a reply the client cannot read: asking again will not help
                raise ChatError(f"unreadable reply: {_short(str(e))}") from None
            except Exception as e:  # the client failed reading the reply (non-JSON body, cut short)
                raise ChatError(f"unreadable reply: {type(e).__name__}: {_short(str(e))}") from None
            if attempt == self.max_retries:
                raise ChatError(f"{reason} (gave up after {attempt + 1} attempts)")
            time.sleep(self._delay(attempt, retry_after))
        raise AssertionError("unreachable")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and 0 <= retry_after <= self.backoff_max_s:
            return retry_after
        # exponential backoff with "equal jitter": half fixed, half random, so that threads hit by
        # the same 429 do not come back in lockstep
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2.0**attempt)
        return ceiling * (0.5 + 0.5 * random.random())


def _retry_after(response) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        try:
            return float(headers[name]) * scale
        except (KeyError, TypeError, ValueError):
            continue
    return None


def _count(value: object) -> int:
    """A token count from a reply; 0 when the server sent something else."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
