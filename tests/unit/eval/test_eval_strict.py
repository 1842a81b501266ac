"""Strict metrics: no substring credit; negations, hedges and candidate sets."""

from __future__ import annotations

import pytest

from medvlm.eval.metrics.strict import exact_match, judge_closed, question_options, token_f1


@pytest.mark.parametrize(("reference", "prediction", "label", "correct", "reason"), [
    ("yes", "Yes.", "yes", True, "match"),
    ("no", "Not sure", None, False, "hedge"),  # the parity metric's substring hit
    ("yes", "The eyes are normal", None, False, "unparsed"),  # parity hit: 'yes' in 'eyes'
    ("no", "There is no evidence of fracture.", None, False, "unparsed"),  # declaratives commit to nothing
    ("yes", "No", "no", False, "mismatch"),
    ("no", "No, there is no mass.", "no", True, "match"),
    ("no", "Not visible on this image", "no", True, "match"),  # a negation that is no hedge
    ("yes", "Yes or no", None, False, "hedge"),
    ("yes", "Yes, possibly a small effusion", None, False, "hedge"),
    ("yes", "I cannot tell", None, False, "hedge"),
    ("yes", "Human: Yes, there is airspace consolidation.", "yes", True, "match"),  # LLaVA-Med artefact
    ("no", "", None, False, "empty"),
    ("normal", "Abnormal", None, False, "unparsed"),  # whole words: 'abnormal' is not 'normal'
    ("left", "left side", "left", True, "match"),
    ("left", "The left lung", "left", True, "match"),
])
def test_closed_judgement(
    reference: str, prediction: str, label: str | None, correct: bool, reason: str
) -> None:
    judged = judge_closed(prediction, reference)
    assert (judged.label, judged.correct, judged.reason) == (label, correct, reason)


def test_candidates_from_question_options() -> None:
    question = "Is this a CT or an MRI? Please choose from the following two options: [CT, MRI]"
    assert question_options(question) == ["ct", "mri"]
    judged = judge_closed("MRI of the brain", "CT", question)
    assert (judged.label, judged.correct, judged.reason) == ("mri", False, "mismatch")
    assert judge_closed("CT scan", "CT", question).correct


def test_ten_item_aggregate_under_strict_rules() -> None:
    closed = [("yes", "Yes."), ("no", "Not sure"), ("yes", "No"), ("no", "Yes, there is a mass"),
              ("left", "left side"), ("yes", "I cannot tell")]
    assert [judge_closed(p, g).correct for g, p in closed] == [True, False, False, False, True, False]
    opened = [("left lung", "The left lung"), ("left lung", "Right lung"), ("ct with contrast", "CT"),
              ("urinary", "kidney")]
    assert [exact_match(p, g) for g, p in opened] == [True, False, False, False]
    f1 = [token_f1(p, g) for g, p in opened]
    assert f1 == pytest.approx([1.0, 0.5, 0.5, 0.0])


def test_token_f1_uses_min_counts() -> None:
    # parity counts all three 'brain's as true positives; SQuAD-style F1 counts one
    assert token_f1("brain brain brain", "brain") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0
