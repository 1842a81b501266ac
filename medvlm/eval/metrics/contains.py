"""``contains``: an open answer is right when it contains the reference as whole words.

Exact match is harsh on open answers that wrap the right term in a sentence ("The left lung is
affected" for "left lung"); LLaVA-Med's open recall is lenient the other way (word order ignored,
half the words half the credit). Here an open item is a hit when the normalised reference (the
parity normalisation, speaker tags stripped as in the strict metrics) occurs in the normalised
prediction as a contiguous run of whole words: "the left lung" contains "left lung"; "left lungs"
and "lung left" do not. Negation is not parsed ("not the left lung" is a hit), so read it beside
strict exact match, never instead of it. A reference that normalises to nothing is contained only
in an empty answer. Closed questions are the strict family's; this one does not score them.
"""

from __future__ import annotations

from typing import Any

from medvlm.eval.metrics import Answered, ItemValue, Metric, register_metric
from medvlm.eval.metrics.strict import strip_tags
from medvlm.eval.normalize import normalize_parity


def contains(prediction: str, reference: str) -> bool:
    pred, ref = normalize_parity(strip_tags(prediction)), normalize_parity(reference)
    return f" {ref} " in f" {pred} " if ref else not pred


def contains_item(answered: Answered) -> dict[str, float] | None:
    if answered.answer_type != "OPEN":
        return None
    return {"hit": 0.0 if answered.prediction is None else float(contains(answered.prediction, answered.reference))}


def contains_summary(open_entries: list[dict[str, Any]], closed_entries: list[dict[str, Any]]) -> dict[str, Any]:
    hits = [entry["hit"] for entry in open_entries]
    return {"open_accuracy": 100.0 * sum(hits) / len(hits) if hits else None, "n_open": len(hits)}


CONTAINS = register_metric(Metric(
    name="contains",
    description="medvlm contains: the open answer holds the reference as whole words",
    item=contains_item,
    summary=contains_summary,
    values=(ItemValue("contains.open_accuracy", "OPEN", "hit", "open contains", "#31a354", mcnemar=True),),
))
