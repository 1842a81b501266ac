"""Join an answer file to its references and compute ``scores.json``.

Predictions are matched to references by question id (the dataset's own id: VQA-RAD's OSF qid,
SLAKE's qid ...). Missing predictions count as wrong and are listed; predictions for unknown ids
and duplicates are errors. Percentages are 0–100, as the literature reports them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.data.records import Sample
from medvlm.errors import DataError
from medvlm.eval.predict import question_id
from medvlm.eval.strict import closed_correct, exact_match, token_f1
from medvlm.provenance import METRIC_VERSION


@dataclass
class ScoredItem:
    qid: str
    sample: Sample
    prediction: str | None  # None: no prediction for this question

    @property
    def reference(self) -> str:
        return self.sample.answer or ""


def read_answers(path: str | Path) -> dict[str, dict[str, Any]]:
    """question id → answer row; malformed lines and duplicate ids are errors naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError("answer file not found", file=str(path))
    rows: dict[str, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"line {number} is not valid JSON ({exc.msg})", file=str(path)) from None
            if not isinstance(row, dict) or "question_id" not in row or "text" not in row:
                raise DataError(f"line {number} lacks question_id or text", file=str(path))
            qid = str(row["question_id"])
            if qid in rows:
                raise DataError("duplicate prediction", file=str(path), record=qid, key="question_id")
            rows[qid] = row
    return rows


def join(samples: list[Sample], answers: dict[str, dict[str, Any]], answers_file: str = "") -> list[ScoredItem]:
    references = {str(question_id(sample)): sample for sample in samples}
    unknown = sorted(set(answers) - set(references))
    if unknown:
        raise DataError(f"{len(unknown)} prediction(s) for question ids not in the reference set, e.g. "
                        f"{', '.join(unknown[:5])}", file=answers_file, key="question_id")
    return [ScoredItem(qid, sample, str(answers[qid]["text"]) if qid in answers else None)
            for qid, sample in references.items()]


def _percent(values: list[float]) -> float | None:
    return round(100.0 * sum(values) / len(values), 4) if values else None


def strict_metrics(items: list[ScoredItem]) -> dict[str, Any]:
    closed = [i for i in items if i.sample.meta.answer_type == "CLOSED"]
    open_ = [i for i in items if i.sample.meta.answer_type != "CLOSED"]
    pred = lambda item: item.prediction or ""  # noqa: E731 - missing predictions score as empty
    return {
        "closed_accuracy": _percent([float(closed_correct(pred(i), i.reference)) for i in closed]),
        "open_exact_match": _percent([float(exact_match(pred(i), i.reference)) for i in open_]),
        "open_f1": _percent([token_f1(pred(i), i.reference) for i in open_]),
        "n_closed": len(closed), "n_open": len(open_),
    }


def score(samples: list[Sample], answers: dict[str, dict[str, Any]], *, answers_file: str = "",
          provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    items = join(samples, answers, answers_file)
    missing = [item.qid for item in items if item.prediction is None]
    return {
        "n": len(items),
        "metrics": {"strict": strict_metrics(items)},
        "breakdown": {},
        "missing_predictions": {"count": len(missing), "ids": missing[:100]},
        "provenance": {"metric_version": METRIC_VERSION, **(provenance or {})},
    }
