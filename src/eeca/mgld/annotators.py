"""Annotator backends for MGLD stages 2 and 3 behind one interface (paper 3.1, App. B.3).

``Annotator.annotate(task, requests)`` yields one :class:`Result` per :class:`Request`, in
completion order, each ``ok`` with a schema-valid reply or ``failed`` with its reason; nothing is
dropped and nothing is guessed. Backends:

* ``openai``: any OpenAI-compatible server (GPT-4o as in the paper, vLLM, Ollama) through
  :class:`eeca.llm_client.ChatClient`; the image goes as a base64 data url; a thread pool bounds
  the requests in flight.
* ``hf``: a local llava-hf style checkpoint (processor + image-text-to-text model) through
  transformers, batched with left padding, greedy decoding.
* ``template``: offline and deterministic, written from the landmark's metadata (GLDv2 name and
  hierarchical label, or the synthetic world's ground truth) in a few seeded phrasings.

A reply that is not valid JSON or breaks the task's schema is re-asked (the conversation goes on
with the reason) at most ``max_reask`` times. Model replies are cached per sample in a JSONL file
keyed by the sha256 of the backend settings, the prompt version, the filled prompt and the image
bytes, so a rerun (or another output directory sharing the cache) never pays twice.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

from eeca.images import DEFAULT_LIMITS, ImageError, ImageLimits, load_image
from eeca.io import JsonlStore
from eeca.llm_client import ChatClient, ChatError, Usage
from eeca.mgld.tasks import Task

REASK = ("Your previous reply could not be used ({reason}). Reply again with only the JSON object "
         "described in my first message, and no other text.")


@dataclass(frozen=True)
class AnnotatorConfig:
    """Which annotator answers, and how. Fields of other backends are ignored.

    ``model`` is the served model name for ``openai`` and the checkpoint folder for ``hf``.
    Prices are US dollars per million tokens (defaults: GPT-4o list prices; 0 for local servers).
    ``delay_s`` pauses before each request (a throttle for a server that takes less than
    ``max_concurrency`` allows; it also makes a run slow enough to interrupt in a test). ``cache`` is
    the reply cache file (default ``<out>/cache.jsonl``); point several runs at one to share it.
    """

    backend: Literal["openai", "hf", "template"] = "template"
    model: str = "gpt-4o"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    health_check: bool = True
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    max_reask: int = 2
    temperature: float = 0.0
    max_tokens: int = 512
    response_format: Literal["json_object", "json_schema", "none"] = "json_object"
    image_detail: Literal["auto", "low", "high"] = "auto"
    price_input_per_1m: float = 2.5
    price_output_per_1m: float = 10.0
    batch_size: int = 4
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    delay_s: float = 0.0
    cache: Path | None = None
    # the names the annotator and the judge share, as they are now spelt
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {"concurrency": "max_concurrency", "structured": "response_format",
                                                "price_input_per_mtok": "price_input_per_1m",
                                                "price_output_per_mtok": "price_output_per_1m"}

    def __post_init__(self):
        for name in ("max_concurrency", "batch_size", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in ("max_retries", "max_reask", "timeout_s", "backoff_base_s", "backoff_max_s", "delay_s",
                     "price_input_per_1m", "price_output_per_1m", "temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


@dataclass(frozen=True)
class Request:
    """One sample to annotate: the filled ``prompt``, its ``fields`` and the landmark's ``facts``.

    ``facts`` (name, hierarchical_label, place, entities, description, ...) feed only the template
    backend; model backends see the prompt and the image.
    """

    id: str
    image: Path
    prompt: str
    fields: dict[str, str]
    facts: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    id: str
    status: Literal["ok", "failed"]
    reply: dict | None
    reason: str | None
    fingerprint: str
    attempts: int = 0
    cached: bool = False


class ResponseCache:
    """Valid replies keyed by request hash, in an append-only JSONL file.

    Only the thread consuming :meth:`Annotator.annotate` writes; worker threads only look up
    (a single dict read, atomic in CPython).
    """

    def __init__(self, path: Path):
        self._store = JsonlStore(path, key="key")

    def get(self, key: str) -> dict | None:
        rec = self._store.get(key)
        return None if rec is None else rec["reply"]

    def put(self, key: str, reply: dict) -> None:
        self._store.append({"key": key, "reply": reply})

    def close(self) -> None:
        self._store.close()


class Annotator:
    """Base class: fingerprints, caching and the reply check shared by every backend."""

    cacheable = True

    def __init__(self, cfg: AnnotatorConfig, cache_path: Path | None = None):
        self.cfg = cfg
        self.usage = Usage()
        self.cache = ResponseCache(cache_path) if (cache_path is not None and self.cacheable) else None

    def settings(self) -> dict:
        """Everything about this backend that changes its replies."""
        raise NotImplementedError

    def fingerprint(self, task: Task, prompt: str) -> str:
        """Hash of backend settings, prompt version and filled prompt; a stored reply is reused
        (by a resumed stage) only while this matches."""
        payload = {"annotator": self.settings(), "prompt_version": task.version, "prompt": prompt}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def annotate(self, task: Task, requests: Iterable[Request]) -> Iterator[Result]:
        """One result per request, in completion order; valid new replies go into the cache."""
        for result, cache_key in self._run(task, requests):
            if self.cache is not None and cache_key and result.status == "ok" and not result.cached:
                self.cache.put(cache_key, result.reply)
            yield result

    def summary(self) -> dict:
        cost = self.usage.cost(self.cfg.price_input_per_1m, self.cfg.price_output_per_1m) \
            if self.cfg.backend == "openai" else 0.0
        return {**self.usage.as_dict(), "cost_usd": round(cost, 6)}

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def _run(self, task: Task, requests: Iterable[Request]) -> Iterator[tuple[Result, str | None]]:
        raise NotImplementedError

    def _cached(self, req: Request, fp: str, image_bytes: bytes) -> tuple[str, Result | None]:
        """``(cache key, cached result or None)`` for a request with fingerprint ``fp``."""
        key = hashlib.sha256(f"{fp}:{hashlib.sha256(image_bytes).hexdigest()}".encode()).hexdigest()
        reply = self.cache.get(key) if self.cache is not None else None
        if reply is None:
            return key, None
        self.usage.add(cached=1)
        return key, Result(req.id, "ok", reply, None, fp, attempts=0, cached=True)


def read_image(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[bytes, str]:
    """``(bytes, mime type)`` of an image file that :mod:`eeca.images` loads (size and pixel limits,
    decodable); :class:`ChatError` with the loader's reason (a counted failure) otherwise."""
    from PIL import Image

    try:
        load_image(Path(path), limits)  # every check of the one loader, decoding included
        data = Path(path).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except ImageError as e:
        raise ChatError(f"image not usable: {path}: {e.reason}") from None
    except OSError as e:
        raise ChatError(f"image unreadable: {path}: {e.strerror}") from None
    return data, Image.MIME.get(fmt or "", "image/jpeg")


def _chunks(items: Iterable, n: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _failed(req: Request, fp: str, reason: str, attempts: int = 0) -> tuple[Result, None]:
    return Result(req.id, "failed", None, reason, fp, attempts=attempts), None


class OpenAIAnnotator(Annotator):
    """Chat completions on an OpenAI-compatible server, ``max_concurrency`` samples in flight."""

    def __init__(self, cfg: AnnotatorConfig, cache_path: Path | None = None):
        super().__init__(cfg, cache_path)
        self.client = ChatClient(cfg.model, cfg.base_url, cfg.api_key_env, timeout_s=cfg.timeout_s,
                                 max_retries=cfg.max_retries, backoff_base_s=cfg.backoff_base_s,
                                 backoff_max_s=cfg.backoff_max_s, usage=self.usage)

    def settings(self) -> dict:
        c = self.cfg
        return {"backend": "openai", "model": c.model, "base_url": self.client.base_url,
                "temperature": c.temperature, "max_tokens": c.max_tokens,
                "response_format": c.response_format, "image_detail": c.image_detail}

    def _run(self, task, requests):
        window = 4 * self.cfg.max_concurrency  # bounded look-ahead: memory stays flat at any input size
        pool = ThreadPoolExecutor(self.cfg.max_concurrency, thread_name_prefix="annotate")
        pending: set = set()
        try:
            for req in requests:
                pending.add(pool.submit(self._one, task, req))
                if len(pending) >= window:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    yield from (f.result() for f in done)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _one(self, task: Task, req: Request) -> tuple[Result, str | None]:
        fp = self.fingerprint(task, req.prompt)
        try:
            data, mime = read_image(req.image)
        except ChatError as e:
            return _failed(req, fp, str(e))
        key, hit = self._cached(req, fp, data)
        if hit is not None:
            return hit, key
        if self.cfg.health_check:
            self.client.health_check()
        if self.cfg.delay_s:
            time.sleep(self.cfg.delay_s)
        url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
        messages = [{"role": "user", "content": [
            {"type": "text", "text": req.prompt},
            {"type": "image_url", "image_url": {"url": url, "detail": self.cfg.image_detail}}]}]
        params = {"temperature": self.cfg.temperature, "max_tokens": self.cfg.max_tokens}
        if self.cfg.response_format == "json_object":
            params["response_format"] = {"type": "json_object"}
        elif self.cfg.response_format == "json_schema":
            params["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": task.name, "schema": task.schema}}
        reason = ""
        for attempt in range(self.cfg.max_reask + 1):
            if attempt:
                self.usage.add(reasks=1)
            try:
                text = self.client.chat(messages, **params).text
            except ChatError as e:
                return _failed(req, fp, str(e), attempt + 1)
            reply, reason = task.parse(text)
            if reply is not None:
                return Result(req.id, "ok", reply, None, fp, attempts=attempt + 1), key
            messages += [{"role": "assistant", "content": text},
                         {"role": "user", "content": REASK.format(reason=reason)}]
        return _failed(req, fp, f"no valid reply after {self.cfg.max_reask + 1} tries; last: {reason}",
                       self.cfg.max_reask + 1)


class HFAnnotator(Annotator):
    """A local llava-hf style checkpoint (``AutoProcessor`` + ``AutoModelForImageTextToText``).

    Batches of ``batch_size`` prompts are left-padded and decoded greedily; replies that fail the
    schema are re-asked in the next round of the same batch.
    """

    def __init__(self, cfg: AnnotatorConfig, cache_path: Path | None = None):
        super().__init__(cfg, cache_path)
        self._model = None
        self._processor = None

    def settings(self) -> dict:
        return {"backend": "hf", "checkpoint": str(Path(self.cfg.model).resolve()),
                "max_new_tokens": self.cfg.max_tokens, "dtype": self.cfg.dtype, "decoding": "greedy"}

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        device = self.cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = self.cfg.dtype
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self._processor = AutoProcessor.from_pretrained(self.cfg.model)
        self._processor.tokenizer.padding_side = "left"  # generation continues at the right edge
        model = AutoModelForImageTextToText.from_pretrained(self.cfg.model, dtype=getattr(torch, dtype))
        self._model = model.to(device).eval()

    def generate(self, conversations: list[list[dict]], images: list) -> list[str]:
        """Greedy replies to a batch of chat conversations, one image each."""
        import torch

        if self._model is None:
            self._load()
        proc, model = self._processor, self._model
        texts = [proc.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in conversations]
        inputs = proc(images=images, text=texts, padding=True, return_tensors="pt").to(model.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=self.cfg.max_tokens, do_sample=False)
        new = out[:, inputs["input_ids"].shape[1]:]  # (B, T_new): only the generated continuation
        pad = proc.tokenizer.pad_token_id
        self.usage.add(requests=len(texts), prompt_tokens=int(inputs["attention_mask"].sum()),
                       completion_tokens=int((new != pad).sum()) if pad is not None else new.numel())
        return proc.batch_decode(new, skip_special_tokens=True)

    def _run(self, task, requests):
        for batch in _chunks(requests, self.cfg.batch_size):
            todo = []
            for r in batch:
                fp = self.fingerprint(task, r.prompt)
                try:
                    data, _ = read_image(r.image)
                except ChatError as e:
                    yield _failed(r, fp, str(e))
                    continue
                key, hit = self._cached(r, fp, data)
                if hit is not None:
                    yield hit, key
                    continue
                image = load_image(data)  # read_image loaded these very bytes: RGB, every mode handled
                conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": r.prompt}]}]
                todo.append((r, fp, key, image, conv))
            yield from self._rounds(task, todo)

    def _rounds(self, task, todo):
        for attempt in range(self.cfg.max_reask + 1):
            if not todo:
                return
            if attempt:
                self.usage.add(reasks=len(todo))
            if self.cfg.delay_s:
                time.sleep(self.cfg.delay_s)
            texts = self.generate([t[4] for t in todo], [t[3] for t in todo])
            retry = []
            for (r, fp, key, image, conv), text in zip(todo, texts, strict=True):
                reply, reason = task.parse(text)
                if reply is not None:
                    yield Result(r.id, "ok", reply, None, fp, attempts=attempt + 1), key
                elif attempt == self.cfg.max_reask:
                    yield _failed(r, fp, f"no valid reply after {attempt + 1} tries; last: {reason}", attempt + 1)
                else:
                    conv = [*conv, {"role": "assistant", "content": [{"type": "text", "text": text}]},
                            {"role": "user", "content": [{"type": "text", "text": REASK.format(reason=reason)}]}]
                    retry.append((r, fp, key, image, conv))
            todo = retry


class TemplateAnnotator(Annotator):
    """Offline, deterministic replies from the landmark's facts, in phrasings seeded per sample.

    Stage 2: "This is <name>, a <label> in <place>. ..." followed by the entities (or, without
    entities, the description) when the facts have them (the synthetic world's ground truth); the
    place is read from a GLDv2 name's parenthesis when no place is known. Stage 3: the ground-truth entities and label when known,
    otherwise what GLDv2 metadata offers (label, supercategory, natural or human-made, place).
    The image is checked to exist, like every backend, but not read.
    """

    cacheable = False

    def __init__(self, cfg: AnnotatorConfig, seed: int = 0):
        super().__init__(cfg, None)
        self.seed = seed

    def settings(self) -> dict:
        return {"backend": "template", "version": 1, "seed": self.seed}

    def _run(self, task, requests):
        for req in requests:
            fp = self.fingerprint(task, req.prompt)
            if not Path(req.image).is_file():
                yield _failed(req, fp, f"image missing: {req.image}")
                continue
            if self.cfg.delay_s:
                time.sleep(self.cfg.delay_s)
            self.usage.add(requests=1)
            text = json.dumps(self._stage2(req) if task.name == "stage2" else self._stage3(req))
            reply, reason = task.parse(text)  # the template obeys the same schema as any model
            if reply is None:
                yield _failed(req, fp, f"template reply invalid: {reason}", 1)
            else:
                yield Result(req.id, "ok", reply, None, fp, attempts=1), None

    def _pick(self, req: Request, n: int) -> int:
        digest = hashlib.sha256(f"mgld-template:{self.seed}:{req.id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % n

    def _stage2(self, req: Request) -> dict:
        return {"answer": template_answer(req.facts, self._pick(req, len(STAGE2_TEMPLATES)))}

    def _stage3(self, req: Request) -> dict:
        f = req.facts
        entities = list(f.get("entities") or [])
        if not entities:
            nature = {"natural": "natural site", "human-made": "human-made structure"}
            entities = [x for x in (f.get("supercategory"), nature.get(str(f.get("natural_or_human_made")).lower()),
                                    _place(f)) if x]
        return {"entities": entities or [_label(f) or "landmark"], "hierarchical_label": _label(f) or "landmark"}


STAGE2_TEMPLATES = (
    "This is {name}{what}{where}.{features}{description}",
    "The image shows {name}{what}{where}.{features}{description}",
    "You are looking at {name}{what}{where}.{features}{description}",
    "This photo was taken at {name}{what}{where}.{features}{description}",
)


def template_answer(facts: dict, variant: int) -> str:
    """The template annotator's stage-2 answer in phrasing ``variant`` of :data:`STAGE2_TEMPLATES`."""
    label, place, entities = _label(facts), _place(facts), list(facts.get("entities") or [])
    features = f" It is recognisable by its {_join(entities[:3])}." if entities else ""
    # a description usually restates the entities (the synthetic world's does): one or the other
    description = f" {facts['description'].strip()}" if facts.get("description") and not entities else ""
    return STAGE2_TEMPLATES[variant].format(
        name=facts["name"], what=f", {_article(label)} {label}" if label else "",
        where=f" in {place}" if place else "", features=features, description=description)


def _label(facts: dict) -> str:
    return str(facts.get("hierarchical_label") or facts.get("supercategory") or "").strip().lower()


def _place(facts: dict) -> str:
    if facts.get("place"):
        return facts["place"]
    name = facts.get("name", "")
    # GLDv2 names often carry their place as a disambiguation: "Holy Trinity Church (Gornji Milanovac)"
    if name.endswith(")") and "(" in name:
        return name[name.rindex("(") + 1:-1].strip()
    return ""


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def build_annotator(cfg: AnnotatorConfig, cache_path: Path | None, seed: int = 0) -> Annotator:
    """The backend ``cfg.backend``; model backends cache replies at ``cache_path``."""
    if cfg.backend == "openai":
        return OpenAIAnnotator(cfg, cache_path)
    if cfg.backend == "hf":
        return HFAnnotator(cfg, cache_path)
    return TemplateAnnotator(cfg, seed)
