"""Join an answer file to its references and compute ``scores.json``.

Predictions are matched to references by question id (the dataset's own id: VQA-RAD's OSF qid,
SLAKE's qid ...), so LLaVA-Med's published answer files score against the OSF VQA-RAD test split
as they are. The registered metric families sit side by side (:mod:`medvlm.eval.metrics`; METHODS.md
§4): ``llava_med`` — parity with LLaVA-Med v1.0.0's ``run_eval_batch.py``; ``strict`` — closed
answers parsed to a label, open exact match and token F1.

Every per-item result is kept (``scores.items.jsonl`` beside ``scores.json``) so reports can show
confusion matrices and the worst errors, and two systems can be compared item by item. Bad input is
never silent: a missing prediction counts as wrong and is listed; predictions for unknown ids, bad
lines and duplicates raise under the ``error`` policy and are counted under ``skip``. Percentages
are 0–100, as the literature reports them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import medvlm
from medvlm.data.prompts import styled_question
from medvlm.data.records import BREAKDOWN_FIELDS, Sample
from medvlm.data.sources import Problem
from medvlm.errors import DataError
from medvlm.eval.answers import AnswerFile, Policy, answers_from_rows, question_id, read_answers
from medvlm.eval.compare import paired_comparison
from medvlm.eval.items import answer_type_of, evaluate_item
from medvlm.eval.metrics import ANSWER_TYPES, Metric, item_values, metrics
from medvlm.eval.stats import bootstrap_ci, rng_for
from medvlm.io import sha256_file, write_json, write_jsonl
from medvlm.provenance import METRIC_VERSION, file_checksums, git_commit
from medvlm.registry import PROMPT_STYLES

__all__ = ["ScoreResult", "items_path", "read_answers", "score", "score_answers"]


@dataclass
class ScoreResult:
    """``scores`` is the scores.json content; ``items`` the per-item rows (scores.items.jsonl)."""

    scores: dict[str, Any]
    items: list[dict[str, Any]]

    def write(self, path: str | Path) -> Path:
        """Write scores.json and its items file beside it (both atomically); return the items path."""
        path = Path(path)
        items = items_path(path)
        write_jsonl(items, self.items)
        write_json(path, {**self.scores, "items_file": items.name})
        return items


def items_path(scores_path: str | Path) -> Path:
    scores_path = Path(scores_path)
    return scores_path.with_name(f"{scores_path.stem}.items.jsonl")


@dataclass
class Joined:
    items: list[dict[str, Any]]
    problems: list[Problem]
    missing: list[int | str]
    inferred_answer_types: int


def join_and_evaluate(samples: list[Sample], answers: AnswerFile, policy: Policy = "error") -> Joined:
    """Match answers to references by question id and score every reference item."""
    references: dict[str, Sample] = {}
    for sample in samples:
        qid = str(question_id(sample))
        if qid in references:
            raise DataError("two reference records share this question id", record=qid, key="question_id")
        references[qid] = sample
    problems = list(answers.problems)
    unknown = [qid for qid in answers.rows if qid not in references]
    if unknown and policy == "error":
        raise DataError(f"{len(unknown)} prediction(s) for question ids not in the reference set, e.g. "
                        f"{', '.join(unknown[:5])} (wrong split or data file? --on-bad-record skip counts "
                        "them instead)", file=answers.path, key="question_id")
    problems += [Problem(answers.path, qid, "question_id", "prediction for a question id not in the "
                         "reference set (ignored)") for qid in unknown]
    items, missing, inferred = [], [], 0
    for qid, sample in references.items():
        answer_type, was_inferred = answer_type_of(sample)
        inferred += was_inferred
        row = answers.rows.get(qid)
        if row is None:
            missing.append(question_id(sample))
        items.append(evaluate_item(sample, row, answer_type))
    return Joined(items, problems, missing, inferred)


def summary(metric: Metric, items: list[dict[str, Any]]) -> dict[str, Any]:
    """A family's ``metrics.<name>`` block, from its entries of the open and of the closed items."""
    entries = {kind: [item[metric.name] for item in items if item["answer_type"] == kind and metric.name in item]
               for kind in ANSWER_TYPES}
    return metric.summary(entries["OPEN"], entries["CLOSED"])


def analyses(families: list[Metric], items: list[dict[str, Any]]) -> dict[str, Any]:
    """The further top-level scores.json entries the families compute from the item rows."""
    return {key: value for metric in families if metric.analyses for key, value in metric.analyses(items).items()}


def group_values(items: list[dict[str, Any]], field: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        value = "all" if field == "overall" else item["meta"].get(field)
        groups.setdefault("unknown" if value is None else str(value), []).append(item)
    return dict(sorted(groups.items()))


def metric_cells(
    items: list[dict[str, Any]], n_boot: int, seed: int, *names: str
) -> dict[str, dict[str, Any]]:
    """{metric: {value, ci_low, ci_high, n}} over ``items``; each metric over its own answer type."""
    cells: dict[str, dict[str, Any]] = {}
    every = item_values()
    for answer_type in ANSWER_TYPES:
        kinds = [value for value in every if value.answer_type == answer_type]
        rows = [item for item in items if item["answer_type"] == answer_type]
        if not rows:
            continue
        values = np.array([[value.value(row) for value in kinds] for row in rows], dtype=np.float64)
        low, high = bootstrap_ci(values, n_boot, rng_for(seed, *names, answer_type))
        for column, value in enumerate(kinds):
            cells[value.name] = {"value": float(values[:, column].mean()), "ci_low": _num(low[column]),
                                 "ci_high": _num(high[column]), "n": len(rows)}
    return {value.name: cells[value.name] for value in every if value.name in cells}


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def breakdown(items: list[dict[str, Any]], n_boot: int, seed: int) -> dict[str, Any]:
    """{field: {value: {metric: {value, ci_low, ci_high, n}}}} for ``overall`` and every breakdown
    field some item has a value for; items without one are grouped as ``unknown``."""
    result: dict[str, Any] = {}
    for field in ("overall", *BREAKDOWN_FIELDS):
        if field != "overall" and all(item["meta"].get(field) is None for item in items):
            continue
        result[field] = {value: metric_cells(rows, n_boot, seed, field, value)
                         for value, rows in group_values(items, field).items()}
    return result


def prompt_style(samples_and_prompts: list[tuple[Sample, str]], recorded: Any) -> dict[str, Any]:
    """The prompt style of an answer file: as recorded in its metadata, else inferred from its prompts
    (LLaVA-Med's files record none, but their closed prompts carry the options suffix)."""
    if recorded is not None:
        return {"prompt_style": recorded, "prompt_style_source": "answer-file metadata"}
    if not samples_and_prompts:
        return {"prompt_style": None, "prompt_style_source": "no prompts recorded"}

    def squash(text: str) -> str:
        return " ".join(text.split()).lower()

    # a style that changed none of these questions cannot be told from plain: plain is tried last
    styles = sorted(PROMPT_STYLES.names(), key=lambda name: name == "plain")
    matches, changed = Counter(), Counter()
    for sample, prompt in samples_and_prompts:
        for style in styles:
            styled = squash(styled_question(sample.question, style, sample.meta.answer_type))
            matches[style] += styled == squash(prompt)
            changed[style] += styled != squash(sample.question)
    total = len(samples_and_prompts)
    for style in styles:
        if matches[style] == total and (style == "plain" or changed[style]):
            return {
                "prompt_style": style,
                "prompt_style_source": "inferred from the prompts in the answer file",
            }
    return {"prompt_style": "other", "prompt_style_source": "inferred from the prompts in the answer file",
            "prompt_style_matches": {style: matches[style] for style in styles}, "prompts": total}


def problems_summary(problems: list[Problem], limit: int = 50) -> dict[str, Any]:
    kinds = Counter(p.message for p in problems)
    return {"count": len(problems), "by_kind": dict(kinds.most_common()),
            "examples": [str(p) for p in problems[:limit]]}


def score_answers(
    samples: list[Sample],
    answers: AnswerFile,
    *,
    policy: Policy = "error",
    bootstrap: int = 1000,
    seed: int = 0,
    baseline: AnswerFile | None = None,
    data_files: list[str | Path] | None = None,
    provenance: dict[str, Any] | None = None,
) -> ScoreResult:
    """Score ``answers`` against ``samples``: scores.json content plus per-item rows."""
    if not samples:
        raise DataError("no reference samples to score against")
    joined = join_and_evaluate(samples, answers, policy)
    by_qid = {str(question_id(s)): s for s in samples}
    prompts = [(by_qid[qid], row["prompt"]) for qid, row in answers.rows.items()
               if qid in by_qid and isinstance(row.get("prompt"), str)]
    described = answers.describe()
    families = metrics()
    scores: dict[str, Any] = {
        "n": len(joined.items),
        "metrics": {metric.name: summary(metric, joined.items) for metric in families},
        "breakdown": breakdown(joined.items, bootstrap, seed),
        **analyses(families, joined.items),
        "missing_predictions": {"count": len(joined.missing), "ids": joined.missing},
        "input_problems": problems_summary(joined.problems),
        "inferred_answer_types": joined.inferred_answer_types,
    }
    if baseline is not None:
        base = join_and_evaluate(samples, baseline, policy)
        scores["comparison"] = paired_comparison(joined.items, base.items, n_boot=bootstrap, seed=seed,
                                                 label=baseline.path)
        scores["comparison"]["baseline_input_problems"] = problems_summary(base.problems)
        scores["comparison"]["baseline_missing_predictions"] = len(base.missing)
    scores["provenance"] = {
        "metric_version": METRIC_VERSION, "medvlm_version": medvlm.__version__, "git_commit": git_commit(),
        **(provenance or {}),
        "predictions": {"file": answers.path, "sha256": _sha256(answers.path), "lines": answers.lines},
        "model_id": described.get("model_id"),
        **prompt_style(prompts, described.get("prompt_style")),
        "decoding": {key: described[key] for key in ("decoding", "max_new_tokens", "template",
                                                     "image_aspect_ratio") if key in described}
        or "not recorded in the answer file",
        "data_checksums": file_checksums(list(data_files)) if data_files else {},
        "bootstrap": {"samples": bootstrap, "seed": seed, "level": 0.95},
        "metric_families": {metric.name: metric.description for metric in families},
    }
    return ScoreResult(scores, joined.items)


def _sha256(path: str) -> str | None:
    return sha256_file(path) if Path(path).is_file() else None



def score(
    samples: list[Sample],
    answers: AnswerFile | Mapping[str, dict[str, Any]],
    *,
    answers_file: str = "",
    **options: Any,
) -> dict[str, Any]:
    """The scores.json content only: the short form for scripts and notebooks (``score(samples, read_answers(path))``).

    ``answers`` may also be a plain mapping question id → answer row; ``answers_file`` names it in
    messages and provenance. Options are those of :func:`score_answers`.
    """
    if not isinstance(answers, AnswerFile):
        answers = answers_from_rows(list(answers.values()), answers_file or "<memory>")
    elif answers_file:
        answers.path = answers_file
    return score_answers(samples, answers, **options).scores
