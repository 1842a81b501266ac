"""LLaVA-Med parity metrics: exactly what ``run_eval_batch.py`` of LLaVA-Med v1.0.0 computes.

Per item (METHODS.md §4), with ``g``/``p`` the normalised reference and prediction:

* OPEN: token precision, recall and F1 where true positives count the *prediction's* occurrences
  of shared words (not the minimum), the script's "exact match" (distinct reference words found in
  the prediction / prediction length — not an exact match), and sentence BLEU via nltk with default
  weights and 1-, 2-, 3-gram-only weights, no smoothing;
* CLOSED: a hit when ``g`` is a substring of ``p`` — the lenient rule that counts "not sure" as a
  correct "no" (the strict metrics in :mod:`medvlm.eval.metrics.strict` sit beside it).

The original normalises the texts once, checks substrings and BLEU on that, and then normalises
them a second time inside its F1 and exact-match helpers; that is reproduced too (it only matters
for texts with more than 32 periods). Reported figures are means over items × 100.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any

from nltk.translate.bleu_score import sentence_bleu

from medvlm.eval.metrics import Answered, ItemValue, Metric, Verdict, register_metric
from medvlm.eval.normalize import normalize_parity

# nltk's default 4-gram BLEU, then the unigram-, bigram- and trigram-only variants the script reports.
BLEU_WEIGHTS = ((0.25, 0.25, 0.25, 0.25), (1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0))
OPEN_KEYS = ("recall", "precision", "f1", "exact", "bleu", "bleu_1", "bleu_2", "bleu_3")


@dataclass(frozen=True)
class TokenScores:
    precision: float
    recall: float
    f1: float


def token_scores(prediction: str, reference: str) -> TokenScores:
    """``calculate_f1score`` of the original: bag-of-words P/R/F1 with prediction-count true positives."""
    pred = Counter(normalize_parity(prediction).split())
    ref = Counter(normalize_parity(reference).split())
    if not pred or not ref:
        return TokenScores(0.0, 0.0, 0.0)
    tp = sum(count for word, count in pred.items() if word in ref)
    if tp == 0:
        return TokenScores(0.0, 0.0, 0.0)
    fp = sum(count for word, count in pred.items() if word not in ref)
    fn = sum(count for word, count in ref.items() if word not in pred)
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return TokenScores(precision, recall, 2 * precision * recall / (precision + recall))


def script_exact(prediction: str, reference: str) -> float:
    """``calculate_exactmatch`` of the original: distinct reference words present / prediction words."""
    pred = Counter(normalize_parity(prediction).split())
    ref = set(normalize_parity(reference).split())
    total = sum(pred.values())
    return sum(1 for word in ref if word in pred) / total if total else 0.0


def bleu_scores(prediction: str, reference: str) -> tuple[float, float, float, float]:
    """nltk sentence BLEU (default, 1-, 2-, 3-gram weights) of normalised texts, no smoothing."""
    hypothesis, references = prediction.split(), [reference.split()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nltk warns on zero n-gram overlaps; the script silenced it too
        scores = sentence_bleu(references, hypothesis, weights=BLEU_WEIGHTS)
    return tuple(float(score) for score in scores)  # type: ignore[return-value]


def closed_hit(prediction: str, reference: str) -> float:
    """The original's closed rule: normalised reference is a substring of normalised prediction."""
    return float(normalize_parity(reference) in normalize_parity(prediction))


def open_item(prediction: str, reference: str) -> dict[str, float]:
    """Every per-item open score the original computes, keyed as in :data:`OPEN_KEYS`."""
    pred, ref = normalize_parity(prediction), normalize_parity(reference)
    tokens = token_scores(pred, ref)  # normalises again, as the original's helper does
    bleu, bleu_1, bleu_2, bleu_3 = bleu_scores(pred, ref)
    return {
        "recall": tokens.recall,
        "precision": tokens.precision,
        "f1": tokens.f1,
        "exact": script_exact(pred, ref),
        "bleu": bleu,
        "bleu_1": bleu_1,
        "bleu_2": bleu_2,
        "bleu_3": bleu_3,
    }


def zero_open_item() -> dict[str, float]:
    """Scores of a missing prediction: wrong on every count (never 'empty string is a substring')."""
    return dict.fromkeys(OPEN_KEYS, 0.0)


def parity_summary(open_items: list[dict[str, float]], closed_hits: list[float]) -> dict[str, float | None]:
    """``scores.json`` ``metrics.llava_med``: percentages, None where a side has no items."""

    def mean(key: str) -> float | None:
        return 100.0 * sum(item[key] for item in open_items) / len(open_items) if open_items else None

    return {
        "open_recall": mean("recall"),
        "closed_accuracy": 100.0 * sum(closed_hits) / len(closed_hits) if closed_hits else None,
        "open_precision": mean("precision"), "open_f1": mean("f1"), "open_exact": mean("exact"),
        "bleu": mean("bleu"), "bleu_1": mean("bleu_1"), "bleu_2": mean("bleu_2"), "bleu_3": mean("bleu_3"),
    }


def parity_item(answered: Answered) -> dict[str, float]:
    """The row entry: ``hit`` for a closed item, the :data:`OPEN_KEYS` scores for an open one."""
    if answered.answer_type == "CLOSED":
        return {"hit": 0.0 if answered.prediction is None else closed_hit(answered.prediction, answered.reference)}
    return zero_open_item() if answered.prediction is None else open_item(answered.prediction, answered.reference)


def _summary(open_entries: list[dict[str, Any]], closed_entries: list[dict[str, Any]]) -> dict[str, float | None]:
    return parity_summary(open_entries, [entry["hit"] for entry in closed_entries])


LLAVA_MED = register_metric(Metric(
    name="llava_med",
    description="LLaVA-Med v1.0.0 run_eval_batch.py parity (METHODS.md section 4)",
    item=parity_item,
    summary=_summary,
    values=(
        ItemValue("llava_med.open_recall", "OPEN", "recall", "open recall (LLaVA-Med)", "#9ecae1",
                  headline="open\n(LLaVA-Med)"),
        ItemValue("llava_med.closed_accuracy", "CLOSED", "hit", "closed acc. (LLaVA-Med)", "#fdae6b",
                  mcnemar=True, headline="closed\n(LLaVA-Med)"),
    ),
    order=0,
    style="parity",
    verdict=Verdict("parity", score={"OPEN": "recall", "CLOSED": "hit"}, credit={"OPEN": "recall", "CLOSED": "hit"}),
))
