"""medvlm's strict metrics: no substring credit.

LLaVA-Med's closed-question metric counts a hit when the reference is a *substring* of the
prediction, so "Not sure" scores as a correct "no" and "The eyes are normal" as a correct "yes".
Here a closed answer is parsed into a label from its leading words — negations and hedges
handled — and compared with the reference label; open answers are scored by exact match after
normalisation and by token F1.
"""

from __future__ import annotations

from collections import Counter

from medvlm.eval.normalize import normalize_parity

YES = {"yes", "yeah", "yep", "correct", "true", "affirmative", "present", "positive"}
NO = {"no", "nope", "incorrect", "false", "negative", "absent", "not", "none", "0"}
HEDGES = ("not sure", "unsure", "cannot tell", "can't tell", "cannot be determined", "can't be determined",
          "unclear", "uncertain", "unknown", "i don't know", "not possible to", "cannot determine",
          "can't determine", "difficult to", "hard to say", "maybe", "possibly", "either")


def closed_label(text: str, candidates: list[str] | None = None) -> str | None:
    """The answer a closed prediction commits to, or None when it commits to nothing.

    Yes/no questions: the leading word decides ("Yes, there is..." → yes; "No evidence" → no;
    "Not sure" → None). Other closed questions: the candidate the prediction starts with.
    """
    norm = normalize_parity(text)
    if not norm:
        return None
    if any(norm.startswith(hedge) or f" {hedge}" in f" {norm}"[:40] for hedge in HEDGES):
        return None
    words = norm.split()
    if candidates is None or set(candidates) <= {"yes", "no"}:
        if words[0] in YES:
            return "yes"
        if words[0] in NO:
            return "no"
        return None
    for candidate in sorted(candidates, key=len, reverse=True):
        cand = normalize_parity(candidate)
        if norm == cand or norm.startswith(cand + " "):
            return candidate
    return None


def closed_correct(prediction: str, reference: str) -> bool:
    ref = normalize_parity(reference)
    candidates = ["yes", "no"] if ref in ("yes", "no") else [reference]
    label = closed_label(prediction, candidates)
    return label is not None and normalize_parity(label) == ref


def exact_match(prediction: str, reference: str) -> bool:
    return normalize_parity(prediction) == normalize_parity(reference)


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD-style token F1 over normalised words (min-count overlap)."""
    pred, ref = normalize_parity(prediction).split(), normalize_parity(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)
