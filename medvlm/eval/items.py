"""One scored item: every metric of one question, as a plain row.

Rows are what ``scores.items.jsonl`` holds and what breakdowns, paired comparisons and reports
read, so a report can be rebuilt and two systems compared without re-reading the data set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medvlm.data.records import BREAKDOWN_FIELDS, Sample
from medvlm.eval.answers import question_id
from medvlm.eval.metrics import closed_hit, open_item, zero_open_item
from medvlm.eval.normalize import normalize_parity
from medvlm.eval.strict import exact_match, judge_closed, token_f1

# Per-item metrics the breakdowns and paired comparisons use: name → (answer type, value 0–100).
ItemMetric = tuple[str, Callable[[dict[str, Any]], float]]
ITEM_METRICS: dict[str, ItemMetric] = {
    "llava_med.open_recall": ("OPEN", lambda row: 100.0 * row["llava_med"]["recall"]),
    "llava_med.closed_accuracy": ("CLOSED", lambda row: 100.0 * row["llava_med"]["hit"]),
    "strict.closed_accuracy": ("CLOSED", lambda row: 100.0 * row["strict"]["correct"]),
    "strict.open_exact_match": ("OPEN", lambda row: 100.0 * row["strict"]["exact_match"]),
    "strict.open_f1": ("OPEN", lambda row: 100.0 * row["strict"]["f1"]),
}


def answer_type_of(sample: Sample) -> tuple[str, bool]:
    """(OPEN | CLOSED, inferred?): yes/no references count as CLOSED when the data set has no types."""
    if sample.meta.answer_type in ("OPEN", "CLOSED"):
        return sample.meta.answer_type, False
    return ("CLOSED" if normalize_parity(sample.answer or "") in ("yes", "no") else "OPEN"), True


def evaluate_item(sample: Sample, row: dict[str, Any] | None, answer_type: str) -> dict[str, Any]:
    """Every metric of one item; a missing prediction (``row`` None) is wrong on every count."""
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
    if answer_type == "CLOSED":
        if prediction is None:
            item["llava_med"] = {"hit": 0.0}
            item["strict"] = {"correct": 0.0, "label": None, "reason": "missing"}
        else:
            judged = judge_closed(prediction, reference, prompt or sample.question)
            item["llava_med"] = {"hit": closed_hit(prediction, reference)}
            item["strict"] = {
                "correct": float(judged.correct),
                "label": judged.label,
                "reason": judged.reason,
            }
    elif prediction is None:
        item["llava_med"] = zero_open_item()
        item["strict"] = {"exact_match": 0.0, "f1": 0.0}
    else:
        item["llava_med"] = open_item(prediction, reference)
        item["strict"] = {"exact_match": float(exact_match(prediction, reference)),
                          "f1": token_f1(prediction, reference)}
    return item
