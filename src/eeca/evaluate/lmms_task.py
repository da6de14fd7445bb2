"""The lmms-eval task functions for MGLD (paper section 3.1), copied as ``utils.py`` beside the task YAML
that ``eeca export`` writes.

lmms-eval asks each model for one answer per test question (the image and the question of the MGLD
record), and this module judges it with eeca's judges against the record's ground truth (name,
category, entities, place and aliases as exported): the rule judge by default, offline and
deterministic; the LLM judge of ``eeca judge`` when ``EECA_MGLD_JUDGE=llm`` (with
``EECA_MGLD_JUDGE_MODEL``, ``EECA_MGLD_JUDGE_BASE_URL``, key from ``OPENAI_API_KEY``). A verdict the
judge could not give counts as failed: it is left out of the accuracy (never scored as Unknown) and
reported as ``mgld_failed``.

Metrics: ``mgld_accuracy`` (Strongly Known + Known, percent, as the paper's tables),
``mgld_unknown`` (percent Unknown) and ``mgld_failed`` (count). With one answer per question the rule
judge cannot give Strongly Known (it needs the landmark named with detail in two answers); compare
models on ``mgld_accuracy``.

Needs eeca importable in the Python that runs lmms-eval (the judges and the metrics are eeca's).
"""

import os
from functools import lru_cache

from eeca.evaluate.judge import GroundTruth, JudgeConfig, LlmJudge, rule_verdict
from eeca.evaluate.metrics import compute_metrics


def mgld_doc_to_visual(doc):
    """The record's image (embedded in the exported dataset)."""
    return [doc["image"].convert("RGB")]


def mgld_doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The MGLD question, with the optional pre/post prompt of the task YAML."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def ground_truth(doc) -> GroundTruth:
    """The judge's ground truth for one exported record."""
    return GroundTruth(name=doc["landmark_name"], hierarchical_label=doc.get("hierarchical_label") or "",
                       place=doc.get("place") or "", entities=tuple(doc.get("entities") or ()),
                       aliases=tuple(doc.get("aliases") or ()), answer=doc.get("answer") or "")


@lru_cache(maxsize=1)
def _llm_judge() -> LlmJudge:
    return LlmJudge(JudgeConfig(generations=None, test_json=None, judge="llm",
                                model=os.environ.get("EECA_MGLD_JUDGE_MODEL", JudgeConfig.model),
                                base_url=os.environ.get("EECA_MGLD_JUDGE_BASE_URL") or None))


def judge(answers: list[str], truth: GroundTruth):
    """The verdict of the judge ``EECA_MGLD_JUDGE`` names (``rule``, the default, or ``llm``)."""
    name = os.environ.get("EECA_MGLD_JUDGE", "rule")
    if name == "rule":
        return rule_verdict(answers, truth)
    if name == "llm":
        return _llm_judge()(answers, truth)
    raise ValueError(f"EECA_MGLD_JUDGE must be 'rule' or 'llm', got {name!r}")


def mgld_process_results(doc, results):
    """One judged row per question, handed to every metric's aggregation."""
    verdict = judge([str(r) for r in results], ground_truth(doc))
    row = {"id": doc["id"], "level": verdict.level, "status": verdict.status, "explanation": verdict.explanation}
    return {"mgld_accuracy": row, "mgld_unknown": row, "mgld_failed": row}


def mgld_accuracy(rows):
    """Strongly Known + Known over the judged questions, percent."""
    return compute_metrics(list(rows))["accuracy"]


def mgld_unknown(rows):
    """Unknown over the judged questions, percent."""
    return compute_metrics(list(rows))["unknown"]


def mgld_failed(rows):
    """Questions without a verdict (left out of the percentages)."""
    return sum(r["status"] != "ok" for r in rows)
