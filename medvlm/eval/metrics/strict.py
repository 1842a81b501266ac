"""medvlm's strict metrics: no substring credit.

LLaVA-Med's closed-question metric counts a hit when the reference is a *substring* of the
prediction, so "Not sure" scores as a correct "no" and "The eyes are normal" as a correct "yes".
Here a closed prediction is first parsed into the answer it commits to, from its *leading* words:

* a leading speaker or answer tag ("Human:", "Assistant:", "Answer:") is ignored — generation
  artefacts, not content;
* a hedge among the first words ("not sure", "cannot tell", "possibly", ...) commits to nothing;
* yes/no questions: the first word decides — "yes"/"correct"/"present"... → yes,
  "no"/"not"/"absent"... → no ("Not visible" is a no; "Not sure" was already a hedge); "yes or no"
  commits to nothing; a declarative sentence ("There is no evidence ...") commits to nothing either,
  symmetrically for both answers, rather than guessing which word carries the answer;
* other closed questions: the longest candidate (the reference, plus options listed in brackets in
  the question, as in LLaVA-Med's "Please choose from the following two options: [a, b]") that the
  prediction equals or starts with as whole words — "abnormal" is not "normal", "left side" is "left".

A prediction that commits to nothing is wrong and counted as *unanswered*, so a report can say how
much of a low strict score is refusal rather than error. Open answers are scored by exact match
after the same normalisation as the parity metric, and by SQuAD-style token F1 (min-count overlap).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sklearn.metrics import confusion_matrix

from medvlm.eval.metrics import Answered, ItemValue, Metric, Verdict, register_metric
from medvlm.eval.normalize import normalize_parity

YES = frozenset({"yes", "yeah", "yep", "yup", "correct", "true", "affirmative", "positive", "present"})
NO = frozenset({"no", "nope", "not", "incorrect", "false", "negative", "absent"})
HEDGES = ("not sure", "unsure", "cannot tell", "can't tell", "cannot be determined", "can't be determined",
          "cannot determine", "can't determine", "cannot say", "can't say", "unclear", "uncertain", "unknown",
          "don't know", "do not know", "not possible", "impossible to", "difficult to", "hard to", "maybe",
          "possibly", "perhaps", "probably", "might", "may be", "either")
HEDGE_WINDOW = 8  # hedges count among this many leading words
_TAG = re.compile(r"^\s*(?:human|assistant|gpt|answer)\s*:\s*", re.IGNORECASE)
_OPTIONS = re.compile(r"\[([^\[\]]+)\]")
CONFUSION_PREDICTED = ("yes", "no", "unanswered", "missing")


@dataclass(frozen=True)
class ClosedJudgement:
    """What a closed prediction commits to and whether that is the reference answer."""

    label: str | None  # normalised answer committed to; None: no answer
    correct: bool
    reason: str  # match | mismatch | hedge | unparsed | empty


def strip_tags(text: str) -> str:
    while (match := _TAG.match(text)) is not None:
        text = text[match.end():]
    return text


def _has_hedge(words: list[str]) -> bool:
    lead = " " + " ".join(words[:HEDGE_WINDOW]) + " "
    return any(f" {hedge} " in lead for hedge in HEDGES)


def question_options(question: str | None) -> list[str]:
    """Normalised options listed in brackets in the question ("... options: [CT, MRI]")."""
    if not question:
        return []
    options = []
    for group in _OPTIONS.findall(question):
        options += [normalize_parity(part) for part in group.split(",") if normalize_parity(part)]
    return options


def closed_label(prediction: str, candidates: list[str]) -> tuple[str | None, str]:
    """(label, reason): the candidate a prediction commits to, from its leading words."""
    words = normalize_parity(strip_tags(prediction)).split()
    if not words:
        return None, "empty"
    if _has_hedge(words):
        return None, "hedge"
    if set(candidates) == {"yes", "no"}:
        if len(words) > 1 and words[1] == "or":
            return None, "hedge"
        if words[0] in YES:
            return "yes", ""
        if words[0] in NO:
            return "no", ""
        return None, "unparsed"
    text = " ".join(words)
    for candidate in sorted(candidates, key=len, reverse=True):
        if text == candidate or text.startswith(candidate + " "):
            return candidate, ""
    return None, "unparsed"


def judge_closed(prediction: str, reference: str, question: str | None = None) -> ClosedJudgement:
    ref = normalize_parity(reference)
    candidates = ["yes", "no"] if ref in ("yes", "no") else sorted({ref, *question_options(question)} - {""})
    label, reason = closed_label(prediction, candidates)
    if label is None:
        return ClosedJudgement(None, False, reason)
    correct = label == ref
    return ClosedJudgement(label, correct, "match" if correct else "mismatch")


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_parity(strip_tags(prediction)) == normalize_parity(reference)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 over normalised words (min-count overlap)."""
    pred, ref = normalize_parity(strip_tags(prediction)).split(), normalize_parity(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def strict_item(answered: Answered) -> dict[str, Any]:
    """The row entry: the closed label read (and why none), or open exact match and token F1."""
    prediction, reference = answered.prediction, answered.reference
    if answered.answer_type == "CLOSED":
        if prediction is None:
            return {"correct": 0.0, "label": None, "reason": "missing"}
        judged = judge_closed(prediction, reference, answered.question)
        return {"correct": float(judged.correct), "label": judged.label, "reason": judged.reason}
    if prediction is None:
        return {"exact_match": 0.0, "f1": 0.0}
    return {"exact_match": float(exact_match(prediction, reference)), "f1": token_f1(prediction, reference)}


def strict_summary(open_entries: list[dict[str, Any]], closed_entries: list[dict[str, Any]]) -> dict[str, Any]:
    """``scores.json`` ``metrics.strict``: percentages, None where a side has no items."""

    def percent(entries: list[dict[str, Any]], key: str) -> float | None:
        return 100.0 * sum(float(entry[key]) for entry in entries) / len(entries) if entries else None

    unanswered = [entry for entry in closed_entries if entry["label"] is None]
    return {
        "closed_accuracy": percent(closed_entries, "correct"),
        "open_exact_match": percent(open_entries, "exact_match"),
        "open_f1": percent(open_entries, "f1"),
        "closed_unanswered": 100.0 * len(unanswered) / len(closed_entries) if closed_entries else None,
        "n_closed": len(closed_entries), "n_open": len(open_entries),
    }


def closed_confusion(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``closed_confusion``: yes/no reference vs the label the strict parser read (scikit-learn's
    confusion matrix); None without yes/no questions."""
    rows = [
        i for i in items if i["answer_type"] == "CLOSED" and normalize_parity(i["reference"]) in ("yes", "no")
    ]
    if not rows:
        return {"closed_confusion": None}
    truth = [normalize_parity(r["reference"]) for r in rows]
    predicted = [
        "missing" if r["prediction"] is None else (r["strict"]["label"] or "unanswered") for r in rows
    ]
    matrix = confusion_matrix(truth, predicted, labels=list(CONFUSION_PREDICTED))
    return {"closed_confusion": {"true_labels": ["yes", "no"], "predicted_labels": list(CONFUSION_PREDICTED),
                                 "matrix": matrix[:2].tolist(), "n": len(rows)}}


STRICT = register_metric(Metric(
    name="strict",
    description="medvlm strict: parsed closed labels, exact match, token F1",
    item=strict_item,
    summary=strict_summary,
    values=(
        ItemValue("strict.closed_accuracy", "CLOSED", "correct", "closed acc. (strict)", "#e6550d",
                  mcnemar=True, headline="closed\n(strict)"),
        ItemValue("strict.open_exact_match", "OPEN", "exact_match", "open exact (strict)", "#3182bd",
                  headline="open exact\n(strict)"),
        ItemValue("strict.open_f1", "OPEN", "f1", "open F1 (strict)", "#08519c", headline="open F1\n(strict)"),
    ),
    order=1,
    style="strict",
    analyses=closed_confusion,
    verdict=Verdict("strict", score={"OPEN": "f1", "CLOSED": "correct"},
                    credit={"OPEN": "exact_match", "CLOSED": "correct"}, reason="reason"),
))
