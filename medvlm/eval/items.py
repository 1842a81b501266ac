"""One scored item: every metric of one question, as a plain row.

Rows are what ``scores.items.jsonl`` holds and what breakdowns, paired comparisons and reports
read, so a report can be rebuilt and two systems compared without re-reading the data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvlm.data.records import BREAKDOWN_FIELDS, Sample
from medvlm.eval.answers import question_id
from medvlm.eval.metrics import Answered, metrics
from medvlm.eval.normalize import normalize_parity


def answer_type_of(sample: Sample) -> tuple[str, bool]:
    """(OPEN | CLOSED, inferred?): yes/no references count as CLOSED when the data set has no types."""
    if sample.meta.answer_type in ("OPEN", "CLOSED"):
        return sample.meta.answer_type, False
    return ("CLOSED" if normalize_parity(sample.answer or "") in ("yes", "no") else "OPEN"), True


def evaluate_item(sample: Sample, row: dict[str, Any] | None, answer_type: str) -> dict[str, Any]:
    """Every registered metric family's entry for one item (:mod:`medvlm.eval.metrics`); a missing
    prediction (``row`` None) is wrong on every count."""
    reference = sample.answer or ""
    prediction = None if row is None else row["text"]
    prompt = None if row is None else row.get("prompt")
    item: dict[str, Any] = {
        "question_id": question_id(sample), "answer_type": answer_type, "question": sample.question,
        "prompt": prompt, "reference": reference, "prediction": prediction,
        "meta": {name: getattr(sample.meta, name) for name in BREAKDOWN_FIELDS},
        # the root made absolute, so a report built from another directory still finds the image
        "image": {"root": str(Path(sample.image_root).resolve()) if sample.image_root else None,
                  "path": sample.images[0]} if sample.images else None,
    }
    answered = Answered(answer_type, prompt or sample.question, reference, prediction)
    for metric in metrics():
        entry = metric.item(answered)
        if entry is not None:
            item[metric.name] = entry
    return item
