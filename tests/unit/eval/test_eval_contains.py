"""The ``contains`` metric family: whole-word containment of the reference in open answers."""

from __future__ import annotations

import pytest

from medvlm.eval.answers import answers_from_rows
from medvlm.eval.metrics.contains import contains
from medvlm.eval.score import score_answers
from tests.unit.eval.test_eval_score import TEN, samples_of


@pytest.mark.parametrize(("reference", "prediction", "hit"), [
    ("left lung", "The left lung is affected.", True),
    ("left lung", "Assistant: left lung", True),
    ("left lung", "left lungs", False),
    ("left lung", "lung, left", False),
    ("two", "There are 2 lesions", True),  # number words normalised as in parity
    ("ct with contrast", "CT", False),
    ("the", "", True),  # nothing left of the reference: only an empty answer contains it
    ("the", "liver", False),
])
def test_contains_vectors(reference: str, prediction: str, hit: bool) -> None:
    assert contains(prediction, reference) is hit


def test_contains_in_scores_items_breakdown_and_comparison() -> None:
    answers = answers_from_rows([{"question_id": q, "text": text} for q, *_, text in TEN if q != 10])
    baseline = answers_from_rows([{"question_id": q, "text": "left lung"} for q, *_ in TEN])
    result = score_answers(samples_of(), answers, bootstrap=100, baseline=baseline)
    # open: "The left lung" hit, "Right lung" miss, "CT" miss, qid 10 missing
    assert result.scores["metrics"]["contains"] == {"open_accuracy": 25.0, "n_open": 4}
    assert [item.get("contains") for item in result.items][5:] == [None, {"hit": 1.0}, {"hit": 0.0},
                                                                    {"hit": 0.0}, {"hit": 0.0}]
    assert result.scores["breakdown"]["overall"]["all"]["contains.open_accuracy"]["value"] == 25.0
    test = result.scores["comparison"]["tests"]["contains.open_accuracy"]
    assert (test["baseline"], test["test"]) == (50.0, "mcnemar_exact")
