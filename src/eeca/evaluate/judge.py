"""The four-level recognition judge over k answers per question (paper section 3.1 and App. C).

A judge reads all k answers to one test question together with the ground truth and returns one of
four levels: Strongly Known, Known, Weakly Unknown, Unknown (App. C.1 also calls the third
"Partially Known"; we use the name of section 3.1). Two judges:

* ``llm``: any OpenAI-compatible chat server (OpenAI's GPT-4o as in the paper; vLLM; Ollama)
  through :class:`eeca.llm_client.ChatClient` (base url normalised to ``/v1``, key from the
  environment or a dummy one for local servers, ``/v1/models`` checked before the first request,
  401/403/404 stop the run, request and token counts). The instructions, level definitions and one worked
  example per level are in ``prompts/judge_v1.txt`` (versioned: a changed prompt is a new cache
  key). Temperature 0. The answer is forced to the four labels with a JSON schema where the server
  supports structured output (``response_format: json_schema``) and parsed strictly otherwise: anything
  but a JSON object whose ``level`` is one of the four labels is a failure. The client retries
  408/409/429, 5xx, connection errors and timeouts with exponential backoff and jitter
  (``max_retries``, honouring Retry-After). A failure is recorded with status ``failed``: it is counted, never
  guessed, never scored as Unknown, and judged again on the next run. Verdicts are cached in a
  JSONL keyed by sha256(judge model, prompt version, id, the k answers, the ground truth), so a
  rerun, or a second output folder over the same answers, sends no request for a known verdict.
* ``rule``: offline and deterministic, for the synthetic world and for sanity checks of the LLM
  judge (see :func:`rule_verdict` for the thresholds; the judge id is ``rule:v3:...``, v2 being the
  stricter Weakly Unknown rule, v3 the Unicode text folding).

Chance control (``shuffle_truth``): every question is judged against the ground truth of another
question of a different landmark (a seeded derangement, :func:`derange_truths`); the judge id gets
``+shuffled:<seed>`` so verdicts and cache keys never mix with the real ones. What such a run
credits, the judge credits by chance (DESIGN section 8: every grid carries this control).

Writes ``judgments.jsonl`` (DESIGN section 3: id, level, judge, explanation, status, cache_key),
``metrics.json`` (``eeca.evaluate.metrics``) and ``judge_summary.json`` (HTTP requests and retries,
cache hits, failures, tokens, cost, ``generations_sha256`` of the judged file, ``shuffle_truth``).
With ``shuffle_truth`` each judgment row also carries ``truth_id``, the question whose truth it was
judged against.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Hashable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from tqdm import tqdm

from eeca.config import FieldError, InputPath, check_inputs, load_config
from eeca.evaluate.levels import LABEL_TO_LEVEL, LEVEL_TO_LABEL, LEVELS
from eeca.evaluate.metrics import accuracy_text, compute_metrics
from eeca.io import InputError, JsonlStore, atomic_write, read_json, read_jsonl, run_lock, write_json
from eeca.llm_client import ChatClient, ChatError, FatalChatError, Usage
from eeca.mgld.schema import check


@dataclass(frozen=True)
class JudgeConfig:
    """Which judge rates the generations and how (the LLM fields are ignored by the rule judge)."""

    generations: InputPath  # generations.jsonl of eeca generate
    test_json: InputPath  # the MGLD test records the generations answer (ground truth)
    truth: InputPath | None = None  # optional landmarks JSONL by landmark_id with aliases and place (synthetic world)
    judge: Literal["llm", "rule"] = "llm"
    model: str = "gpt-4o-2024-08-06"  # pinned snapshot: a moving alias would change verdicts silently
    base_url: str | None = None  # None = OpenAI; e.g. http://localhost:8000 (vLLM), http://localhost:11434 (Ollama)
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never from a file
    response_format: Literal["json_schema", "none"] = "json_schema"
    prompt: str = "judge_v1"  # eeca/evaluate/prompts/<prompt>.txt
    max_concurrency: int = 8
    max_retries: int = 5
    timeout_s: float = 60.0
    max_tokens: int = 300
    cache: Path | None = None  # verdict cache JSONL; None = <out>/verdict_cache.jsonl
    price_input_per_1m: float = 2.5  # USD per million tokens, for the cost line of the summary
    price_output_per_1m: float = 10.0
    rule_strong_min: int = 2  # rule judge: named with detail in at least this many answers -> Strongly Known
    rule_category_is_hint: bool = False  # rule judge: does the category word count as an attribute (never a hint alone)
    shuffle_truth: bool = False  # chance control: judge each question against another landmark's ground truth
    shuffle_seed: int = 0  # seed of that derangement
    bootstrap_samples: int = 2000
    seed: int = 0
    # the names the judge and the MGLD annotator share, as they are now spelt
    RENAMED_FIELDS: ClassVar[dict[str, str]] = {"structured": "response_format", "concurrency": "max_concurrency",
                                                "price_input_per_mtok": "price_input_per_1m",
                                                "price_output_per_mtok": "price_output_per_1m"}

    def __post_init__(self):
        if self.max_concurrency < 1 or self.max_retries < 0 or self.timeout_s <= 0 or self.rule_strong_min < 1:
            raise ValueError("max_concurrency >= 1, max_retries >= 0, timeout_s > 0, rule_strong_min >= 1")
        for name in ("bootstrap_samples", "max_tokens"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class GroundTruth:
    """What the judge compares the answers with, for one test question."""

    name: str
    hierarchical_label: str = ""
    place: str = ""
    entities: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    answer: str = ""  # the MGLD reference answer (the gpt turn)

    def as_dict(self) -> dict:
        return {"name": self.name, "hierarchical_label": self.hierarchical_label, "place": self.place,
                "entities": list(self.entities), "aliases": list(self.aliases), "answer": self.answer}


@dataclass
class Verdict:
    level: str | None
    status: Literal["ok", "failed"]
    explanation: str


def load_ground_truth(test_json: Path, truth: Path | None) -> dict[str, GroundTruth]:
    """Ground truth per test id from the MGLD records, completed by a landmarks truth file if given."""
    extra: dict[int, dict] = {}
    if truth is not None:
        for n, rec in enumerate(read_jsonl(truth), 1):
            _require(rec, _TRUTH_RECORD, f"{truth}: line {n}")
            extra[int(rec["landmark_id"])] = rec
    out = {}
    records = read_json(test_json)
    _require(records, {"type": "array"}, str(test_json))
    for n, rec in enumerate(records):
        _require(rec, _TEST_RECORD, f"{test_json}: record {n}")
        t = extra.get(int(rec["landmark_id"])) if "landmark_id" in rec else None
        conv = rec.get("conversations") or []
        out[str(rec["id"])] = GroundTruth(
            name=rec["landmark_name"], hierarchical_label=rec.get("hierarchical_label") or "",
            place=(t or {}).get("place", ""), entities=tuple(rec.get("entities") or (t or {}).get("entities", ())),
            aliases=tuple((t or {}).get("aliases", ())),
            answer=conv[1]["value"] if len(conv) > 1 and isinstance(conv[1], dict) else "")
    return out


_STRINGS = {"type": "array", "items": {"type": "string"}}
# what the judge reads of a test record and of a landmarks truth record (the rest is not its concern)
_TEST_RECORD = {"type": "object", "required": ["id", "landmark_name"],
                "properties": {"id": {"type": ["string", "integer"]}, "landmark_name": {"type": "string", "minLength": 1},
                               "landmark_id": {"type": "integer"}, "hierarchical_label": {"type": ["string", "null"]},
                               "entities": _STRINGS, "conversations": {"type": "array"}}}
_TRUTH_RECORD = {"type": "object", "required": ["landmark_id", "name"],
                 "properties": {"landmark_id": {"type": "integer"}, "name": {"type": "string"},
                                "place": {"type": "string"}, "aliases": _STRINGS, "entities": _STRINGS}}


def _require(value, schema: dict, where: str) -> None:
    problems = check(value, schema)
    if problems:
        raise InputError(f"{where}: field '{problems[0][0]}': {problems[0][1]}")


def cache_key(judge_id: str, record_id: str, responses: list[str], truth: GroundTruth) -> str:
    """sha256 over everything a verdict depends on."""
    blob = json.dumps({"judge": judge_id, "id": record_id, "responses": responses, "truth": truth.as_dict()},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---- rule judge ---------------------------------------------------------------------------------

def normalise(text: str) -> str:
    """Unicode-folded text, padded for whole-word search: NFKC and casefold (any script, "ß" = "ss",
    full-width = ASCII), accents on Latin letters dropped ("Família" = "Familia"; marks of other
    scripts are part of their letters and kept), punctuation, symbols and spaces to single spaces;
    Han, kana and Thai characters are words of their own, so a name is found in unspaced text."""
    kept: list[str] = []
    for c in unicodedata.normalize("NFKD", text):
        if unicodedata.category(c) == "Mn" and kept and kept[-1] < "\u0250":  # an accent on a Latin letter
            continue
        kept.append(" " if unicodedata.category(c)[0] in "PSZC" else c)
    text = unicodedata.normalize("NFKC", "".join(kept)).casefold()
    text = _UNSPACED.sub(r" \1 ", text)  # scripts written without spaces: every character is a word
    return " " + " ".join(text.split()) + " "


_UNSPACED = re.compile("([\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])")  # Thai, kana, Han


def _mentions(norm_text: str, phrases: list[str]) -> bool:
    return any(p.strip() and p in norm_text for p in (normalise(x) for x in phrases))


def _distinct_mentions(norm_text: str, phrases: list[str]) -> int:
    """How many distinct phrases occur, longest first, each occurrence used once ("twin spires" is not also "spires")."""
    found = 0
    for p in sorted({normalise(x) for x in phrases if normalise(x).strip()}, key=len, reverse=True):
        if p in norm_text:
            found += 1
            norm_text = norm_text.replace(p, " | ")
    return found


def split_place(place: str) -> tuple[str | None, list[str]]:
    """(town, wider parts) of a "Town, Country" place: the first part is the town when there are two or more
    parts; the rest (country, region) are wide. A one-part place cannot be told apart from a country, so it
    counts as wide (the stricter reading)."""
    parts = [p.strip() for p in place.split(",") if p.strip()]
    if len(parts) >= 2:
        return parts[0], parts[1:]
    return None, parts


def rule_verdict(responses: list[str], truth: GroundTruth, strong_min: int = 2, category_is_hint: bool = False) -> Verdict:
    """Deterministic four-level verdict from name, alias and hint matches (whole words, normalised text).

    * named: the landmark's name or an alias occurs in the answer.
    * detail: the answer also mentions a part of the place (town or country) or one of the landmark's
      entities.
    * Strongly Known: at least ``strong_min`` answers are named AND carry detail (default 2: App. C.2
      rates "correctly identified in Responses 2 and 3 with precise details" Strongly Known).
    * Known: at least one answer is named.
    * Weakly Unknown: none is named, and some SINGLE answer carries a hint that random answers do not
      hit by chance, i.e. it mentions

      (i) the town (the first part of ``truth.place``, "Town, Country"; towns are unique per landmark
          in the synthetic world), or
      (ii) the country (any later part of the place) AND at least one attribute, or
      (iii) at least two distinct attributes,

      where the attributes are the landmark's entities, plus the category word when
      ``category_is_hint`` (then it is one attribute, never enough alone: App. C.2's Unknown example
      names other windmills, i.e. the right category, and is still Unknown). Hints spread over
      different answers do not add up. Why: the old rule credited a country or any one entity; with
      the synthetic world's 12 countries a single country mention is hit by 1 - (11/12)^5 = 35% of
      five random answers, and garbled answers reached Weakly Unknown about 30% of the time.
    * Unknown: otherwise.
    """
    names = [truth.name, *truth.aliases]
    town, wide = split_place(truth.place)
    places = ([town] if town else []) + wide
    attributes = list(truth.entities) + ([truth.hierarchical_label] if category_is_hint and truth.hierarchical_label else [])
    normed = [normalise(r) for r in responses]
    named = [_mentions(t, names) for t in normed]
    detail = [_mentions(t, places + list(truth.entities)) for t in normed]
    n_named, n_strong = sum(named), sum(a and b for a, b in zip(named, detail, strict=True))
    by_town = by_country = by_attributes = 0
    for t in normed:
        n_attr = _distinct_mentions(t, attributes)
        if town and _mentions(t, [town]):
            by_town += 1
        elif _mentions(t, wide) and n_attr >= 1:
            by_country += 1
        elif n_attr >= 2:
            by_attributes += 1
    if n_strong >= strong_min:
        level = "strongly_known"
    elif n_named >= 1:
        level = "known"
    elif by_town + by_country + by_attributes >= 1:
        level = "weakly_unknown"
    else:
        level = "unknown"
    k = len(responses)
    why = (f"named in {n_named}/{k} answers ({n_strong} with place or entity detail); hints: town in {by_town}/{k}, "
           f"country with an attribute in {by_country}/{k}, two or more attributes in {by_attributes}/{k}")
    return Verdict(level, "ok", why)


def derange_truths(landmarks: Mapping[str, Hashable], seed: int) -> dict[str, str]:
    """For the judge chance control: question id -> the id whose ground truth it is judged against.

    ``landmarks`` maps each judged id to its landmark. The result is a permutation of the ids in which
    every id gets the truth of a question of ANOTHER landmark, seeded and independent of the order of
    ``landmarks``: a seeded random permutation, drawn again until it has that property (up to 100
    draws; a uniform draw among the valid ones), otherwise built by shuffling the ids, grouping them
    by landmark and rotating by the largest group. ValueError when no such permutation exists: fewer
    than two landmarks, or one landmark holding more than half of the questions.
    """
    ids = sorted(landmarks)
    n = len(ids)
    if n == 0:
        return {}
    sizes = Counter(landmarks[i] for i in ids)
    if len(sizes) < 2:
        raise InputError(f"shuffle_truth: all {n} judged questions show one landmark; a shuffled truth needs at least two")
    top, m = sizes.most_common(1)[0]
    if 2 * m > n:
        raise InputError(f"shuffle_truth: landmark {top!r} has {m} of the {n} judged questions (more than half), so they "
                         "cannot all be given the truth of another landmark")
    rng = random.Random(seed)
    order = list(range(n))
    for _ in range(100):
        rng.shuffle(order)
        if all(landmarks[ids[order[j]]] != landmarks[ids[j]] for j in range(n)):
            return {ids[j]: ids[order[j]] for j in range(n)}
    rng.shuffle(order)
    first = {}
    for j in order:
        first.setdefault(landmarks[ids[j]], len(first))
    grouped = sorted(order, key=lambda j: first[landmarks[ids[j]]])  # stable: shuffled within each landmark
    # Each landmark is a contiguous block of at most m <= n/2 positions; position p and p + m (mod n) are
    # m or n - m >= m apart, so never in the same block.
    return {ids[grouped[p]]: ids[grouped[(p + m) % n]] for p in range(n)}


def landmark_keys(test_json: Path) -> dict[str, str]:
    """The landmark of every test question (its ``landmark_id``, or its name when the record has no id)."""
    return {str(rec["id"]): (f"id:{rec['landmark_id']}" if rec.get("landmark_id") is not None else f"name:{rec['landmark_name']}")
            for rec in read_json(test_json)}


# ---- LLM judge ----------------------------------------------------------------------------------

def load_prompt(name: str) -> tuple[str, str, str]:
    """(system text, user template, version) of ``prompts/<name>.txt``; the version hashes the text."""
    text = resources.files("eeca.evaluate").joinpath("prompts", f"{name}.txt").read_text(encoding="utf-8")
    system, sep, user = text.partition("=== USER ===\n")
    if not sep:
        raise ValueError(f"prompt {name}: no '=== USER ===' line between instructions and the user template")
    return system.strip(), user.strip(), f"{name}:{hashlib.sha256(text.encode()).hexdigest()[:8]}"


VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"level": {"type": "string", "enum": [LEVEL_TO_LABEL[lv] for lv in LEVELS]},
                   "explanation": {"type": "string"}},
    "required": ["level", "explanation"],
    "additionalProperties": False,
}


def parse_verdict(content: str | None) -> tuple[str, str]:
    """(level, explanation) from the judge's reply; ValueError on anything but one of the four labels."""
    if not content:
        raise ValueError("empty reply")
    text = content.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", text, flags=re.S)
    try:
        obj = json.loads(fenced.group(1) if fenced else text)
    except json.JSONDecodeError:
        raise ValueError(f"not JSON: {text[:80]!r}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("level"), str):
        raise ValueError(f"no 'level' string in {text[:80]!r}")
    level = LABEL_TO_LEVEL.get(obj["level"].strip())
    if level is None:
        raise ValueError(f"off-label level {obj['level']!r}")
    return level, str(obj.get("explanation", ""))


def judge_messages(system: str, user_template: str, responses: list[str], truth: GroundTruth) -> list[dict]:
    """The chat messages asking for one question's verdict (the prompt filled with the truth and the k answers)."""
    numbered = "\n".join(f"Response {i + 1}: {r}" for i, r in enumerate(responses))
    user = user_template.format(name=truth.name, aliases=", ".join(truth.aliases) or "-",
                                category=truth.hierarchical_label or "-", place=truth.place or "-",
                                answer=truth.answer or "-", k=len(responses), responses=numbered)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


# a rough rate for English prompts with GPT-4o's tokenizer (o200k): an estimate, not a count
CHARS_PER_TOKEN = 4.0


def estimate_cost(cfg: JudgeConfig, limit: int | None = None) -> dict:
    """What judging ``cfg.generations`` (its first ``limit`` questions) would send, before anything is sent:
    requests, input tokens estimated from the filled prompts (``CHARS_PER_TOKEN``), output tokens at most
    ``max_tokens`` each, and the cost at the config's prices. Cached verdicts are not subtracted."""
    gens = read_jsonl(cfg.generations)[:limit]
    truths = load_ground_truth(cfg.test_json, cfg.truth)
    system, user_template, _ = load_prompt(cfg.prompt)
    chars = sum(len(m["content"]) for g in gens if str(g.get("id")) in truths
                for m in judge_messages(system, user_template, g.get("responses") or [], truths[str(g["id"])]))
    tokens_in, tokens_out = round(chars / CHARS_PER_TOKEN), len(gens) * cfg.max_tokens
    return {"requests": len(gens), "input_tokens": tokens_in, "max_output_tokens": tokens_out,
            "max_cost_usd": round((tokens_in * cfg.price_input_per_1m + tokens_out * cfg.price_output_per_1m) / 1e6, 2)}


class LlmJudge:
    """The OpenAI-compatible judge; one instance per run, shared by the worker threads."""

    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        self.system, self.user_template, self.prompt_version = load_prompt(cfg.prompt)
        self.id = f"{cfg.model}+{self.prompt_version}"
        self.client = ChatClient(cfg.model, cfg.base_url, cfg.api_key_env, timeout_s=cfg.timeout_s,
                                 max_retries=cfg.max_retries)

    def messages(self, responses: list[str], truth: GroundTruth) -> list[dict]:
        return judge_messages(self.system, self.user_template, responses, truth)

    def __call__(self, responses: list[str], truth: GroundTruth) -> Verdict:
        kwargs: dict[str, Any] = {}
        if self.cfg.response_format == "json_schema":
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "verdict", "strict": True, "schema": VERDICT_SCHEMA}}
        try:
            reply = self.client.chat(self.messages(responses, truth), temperature=0,
                                     max_tokens=self.cfg.max_tokens, **kwargs)
        except ChatError as e:
            return Verdict(None, "failed", f"request failed: {e}")
        if reply.finish_reason == "length":
            return Verdict(None, "failed", "reply cut at max_tokens")
        try:
            level, explanation = parse_verdict(reply.text)
        except ValueError as e:
            return Verdict(None, "failed", f"unparseable reply: {e}")
        return Verdict(level, "ok", explanation)


# ---- the run ------------------------------------------------------------------------------------

def run_judge(cfg: JudgeConfig, out: Path) -> dict:
    """Judge every generation, reusing cached verdicts; write judgments, metrics and a summary."""
    gens = read_jsonl(cfg.generations)
    truths = load_ground_truth(cfg.test_json, cfg.truth)
    seen: set[str] = set()
    for n, g in enumerate(gens, 1):
        if not isinstance(g, dict):
            raise InputError(f"{cfg.generations}: line {n}: expected a JSON object, got {type(g).__name__}")
        if str(g.get("id")) in seen:
            raise InputError(f"{cfg.generations}: line {n}: duplicate id {g.get('id')!r}")
        seen.add(str(g.get("id")))
        if str(g.get("id")) not in truths:
            raise InputError(f"{cfg.generations}: line {n}: id {g.get('id')!r} is not in {cfg.test_json}")
        if not isinstance(g.get("responses"), list) or not g["responses"] or \
                not all(isinstance(r, str) for r in g["responses"]):
            raise InputError(f"{cfg.generations}: line {n}: field 'responses': expected a non-empty list of strings")
    generations_sha256 = hashlib.sha256(Path(cfg.generations).read_bytes()).hexdigest()
    donor: dict[str, str] = {}
    if cfg.shuffle_truth:  # chance control: each question against the truth of a question of another landmark
        landmark_of = landmark_keys(cfg.test_json)
        donor = derange_truths({str(g["id"]): landmark_of[str(g["id"])] for g in gens}, cfg.shuffle_seed)
        truths = {rid: truths[donor.get(rid, rid)] for rid in truths}
    out.mkdir(parents=True, exist_ok=True)
    llm = LlmJudge(cfg) if cfg.judge == "llm" else None
    judge_id = llm.id if llm else f"rule:v3:strong_min={cfg.rule_strong_min}:category_hint={cfg.rule_category_is_hint}"
    if cfg.shuffle_truth:
        judge_id += f"+shuffled:{cfg.shuffle_seed}"
    keys = {str(g["id"]): cache_key(judge_id, str(g["id"]), g["responses"], truths[str(g["id"])]) for g in gens}
    verdicts: dict[str, Verdict] = {}
    usage = llm.client.usage if llm else Usage()
    t0 = time.perf_counter()
    if llm is None:
        for g in tqdm(gens, desc="judge (rule)", unit="q"):
            verdicts[str(g["id"])] = rule_verdict(g["responses"], truths[str(g["id"])], cfg.rule_strong_min,
                                                  cfg.rule_category_is_hint)
    else:
        with JsonlStore(cfg.cache or out / "verdict_cache.jsonl", key="cache_key") as cache:
            todo = []
            for g in gens:
                hit = cache.get(keys[str(g["id"])])
                if hit is not None:
                    usage.add(cached=1)
                    verdicts[str(g["id"])] = Verdict(hit["level"], "ok", hit["explanation"])
                else:
                    todo.append(g)
            if todo:
                llm.client.health_check()
            pool = ThreadPoolExecutor(max_workers=cfg.max_concurrency)
            try:
                futures = {pool.submit(llm, g["responses"], truths[str(g["id"])]): str(g["id"]) for g in todo}
                for fut in tqdm(as_completed(futures), total=len(futures), desc=f"judge ({cfg.model})", unit="q"):
                    rid, v = futures[fut], fut.result()  # a FatalChatError (bad key, model gone) ends the run
                    verdicts[rid] = v
                    if v.status == "ok":  # only real verdicts are cached; failures are asked again next run
                        cache.append({"cache_key": keys[rid], "id": rid, "judge": judge_id, "level": v.level,
                                      "explanation": v.explanation})
            finally:  # after a fatal error, questions not yet sent are not sent
                pool.shutdown(wait=True, cancel_futures=True)
    rows = [{"id": str(g["id"]), "level": verdicts[str(g["id"])].level, "judge": judge_id,
             "explanation": verdicts[str(g["id"])].explanation, "status": verdicts[str(g["id"])].status,
             "cache_key": keys[str(g["id"])], **({"truth_id": donor[str(g["id"])]} if donor else {})} for g in gens]
    atomic_write(out / "judgments.jsonl", "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows))
    metrics = compute_metrics(rows, bootstrap_samples=cfg.bootstrap_samples, seed=cfg.seed)
    metrics["judge"] = judge_id
    write_json(out / "metrics.json", metrics)
    counts = usage.as_dict()
    summary = {"judge": judge_id, "n": len(rows), "test_questions_without_generation": len(truths) - len(rows),
               "generations_sha256": generations_sha256, "shuffle_truth": cfg.shuffle_truth,
               "shuffle_seed": cfg.shuffle_seed if cfg.shuffle_truth else None,
               **{name: counts[name] for name in ("requests", "retries", "cached", "prompt_tokens", "completion_tokens")},
               "failed": metrics["n_failed"],
               "cost_usd": round(usage.cost(cfg.price_input_per_1m, cfg.price_output_per_1m), 4),
               "seconds": round(time.perf_counter() - t0, 2)}
    write_json(out / "judge_summary.json", summary)
    return {"summary": summary, "metrics": metrics}


def judge_command(config: Path, out: Path, judge: Literal["llm", "rule"] | None = None,
                  overrides: list[str] = (), dry_run: bool = False, limit: int | None = None) -> int:
    """Rate the k answers per question as Strongly Known / Known / Weakly Unknown / Unknown (LLM or rule judge).

    Args:
        config: YAML file of JudgeConfig (configs/synth/judge.yaml, configs/paper/judge.yaml).
        out: output folder: judgments.jsonl, metrics.json, judge_summary.json (and the verdict cache by default).
        judge: override the config's judge (llm or rule).
        overrides: config overrides such as model=gpt-4o-2024-08-06 base_url=http://localhost:8000 max_concurrency=16.
        dry_run: print the number of requests, the estimated tokens and the cost at the config's prices; send nothing.
        limit: judge only the first LIMIT questions of the generations (a paid trial; OUT gets their verdicts).
    """
    extra = list(overrides) + ([f"judge={judge}"] if judge else [])
    cfg = load_config(JudgeConfig, config, extra)
    check_inputs(cfg, config)
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be >= 1, got {limit}")
        Path(out).mkdir(parents=True, exist_ok=True)
        head = Path(out) / f"generations.first{limit}.jsonl"
        atomic_write(head, "".join(json.dumps(g, ensure_ascii=False) + "\n" for g in read_jsonl(cfg.generations)[:limit]))
        cfg = replace(cfg, generations=head)
    if dry_run:
        e = estimate_cost(cfg)
        if cfg.judge == "rule":
            print(f"judge dry run: rule judge, {e['requests']} questions, no requests to send")
        else:
            print(f"judge dry run: {e['requests']} requests to {cfg.model}; ~{e['input_tokens']} input tokens "
                  f"(about {CHARS_PER_TOKEN:.0f} characters a token), at most {e['max_output_tokens']} output tokens "
                  f"(max_tokens {cfg.max_tokens}); at most ${e['max_cost_usd']} at ${cfg.price_input_per_1m} / "
                  f"${cfg.price_output_per_1m} per million tokens (cached verdicts cost nothing); nothing sent")
        return 0
    try:
        with run_lock(out, "judge"):
            result = run_judge(cfg, Path(out))
    except FatalChatError as e:
        print(f"eeca judge: stopped: {e} (verdicts given so far are cached; rerun to continue)")
        return 2
    s, m = result["summary"], result["metrics"]
    levels = "" if m["n"] == 0 else (f" (SK {m['strongly_known']:.2f} K {m['known']:.2f} WU {m['weakly_unknown']:.2f} "
                                     f"U {m['unknown']:.2f})")
    print(f"judge: {s['judge']}{' (truths shuffled: chance control)' if s['shuffle_truth'] else ''}: {m['n']} judged, {m['n_failed']} failed (rerun to retry), {s['requests']} requests ({s['retries']} retries), "
          f"{s['cached']} from cache, {s['prompt_tokens']}+{s['completion_tokens']} tokens, ${s['cost_usd']}, "
          f"{s['test_questions_without_generation']} test questions without generation; {accuracy_text(m)}{levels}")
    return 1 if m["n_failed"] else 0
