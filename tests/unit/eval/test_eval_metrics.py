"""LLaVA-Med parity metrics: every METHODS.md §4 test vector and the 10-item aggregate, to 1e-6."""

from __future__ import annotations

import pytest

from medvlm.eval.metrics.llava_med import bleu_scores, closed_hit, open_item, parity_summary, script_exact, token_scores
from medvlm.eval.normalize import normalize_parity

# gt, prediction, closed hit, recall, precision, F1 (METHODS.md §4; exact fractions behind the rounding)
VECTORS = [
    ("yes", "Yes.", 1, 1, 1, 1),
    ("no", "Not sure", 1, 0, 0, 0),
    ("yes", "The eyes are normal", 1, 0, 0, 0),
    ("no", "There is no evidence of fracture.", 1, 1, 1 / 6, 2 / 7),
    ("left lung", "Right lung", 0, 0.5, 0.5, 0.5),
    ("x-ray", "This is an X-ray image.", 1, 1, 0.4, 4 / 7),
    ("two", "There are 2 lesions", 1, 1, 0.25, 0.4),
    ("3.5 cm", "about 3.5 cm.", 1, 1, 2 / 3, 0.8),
    ("brain", "brain brain brain", 1, 1, 1, 1),
    ("ct with contrast", "CT", 0, 1 / 3, 1, 0.5),
]


@pytest.mark.parametrize(("gt", "pred", "hit", "recall", "precision", "f1"), VECTORS)
def test_methods_vectors(gt: str, pred: str, hit: int, recall: float, precision: float, f1: float) -> None:
    assert closed_hit(pred, gt) == hit
    scores = open_item(pred, gt)
    assert scores["recall"] == pytest.approx(recall, abs=1e-6)
    assert scores["precision"] == pytest.approx(precision, abs=1e-6)
    assert scores["f1"] == pytest.approx(f1, abs=1e-6)


def test_ten_item_aggregate() -> None:
    closed = [("yes", "Yes."), ("no", "Not sure"), ("yes", "No"), ("no", "Yes, there is a mass"),
              ("left", "left side"), ("yes", "I cannot tell")]
    open_ = [("left lung", "The left lung"), ("left lung", "Right lung"), ("ct with contrast", "CT"),
             ("urinary", "kidney")]
    summary = parity_summary([open_item(p, g) for g, p in open_], [closed_hit(p, g) for g, p in closed])
    assert summary["open_recall"] == pytest.approx(45.833333, abs=1e-4)
    assert summary["open_recall"] == pytest.approx(100 * (1 + 0.5 + 1 / 3 + 0) / 4, abs=1e-6)
    assert summary["closed_accuracy"] == pytest.approx(50.0, abs=1e-6)
    # open precision over the same 4 items: 1, .5, 1, 0
    assert summary["open_precision"] == pytest.approx(62.5, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "This is an X-ray image.",
            "this is x ray image",
        ),  # '-' inside a word → space; article and period dropped
        ("left - right", "left right"),  # a mark touching a space is deleted
        ("1,000 cells; two nuclei", "1000 cells 2 nuclei"),  # digit,digit comma: every mark deleted
        ("3.5 cm.", "3.5 cm"),  # a period before a digit stays
        ("The dont", "don't"),
        ("None of the above", "0 of above"),
        ("somebody'd", "somebodyd"),  # the original table's typo is part of parity
        ("Im here", "im here"),  # capitalised keys never match lower-cased text
    ],
)
def test_normalisation(text: str, expected: str) -> None:
    assert normalize_parity(text) == expected


def test_only_32_periods_are_removed_per_pass() -> None:
    # re.sub(..., re.UNICODE) in the original: count=32
    text = "a." * 40
    once = normalize_parity(text)
    assert once.count(".") == 8
    # the F1 helper normalises a second time, so 40 periods are all gone there
    assert token_scores(text, "a").recall == 0.0 and normalize_parity(once).count(".") == 0


def test_script_exact_is_the_scripts_ratio_not_exact_match() -> None:
    assert script_exact("brain brain brain", "brain") == pytest.approx(1 / 3)
    assert script_exact("ct", "ct with contrast") == 1.0
    assert script_exact("", "x") == 0.0
    assert open_item("Right lung", "left lung")["exact"] == pytest.approx(0.5)


def test_bleu_uses_nltk_with_script_weights() -> None:
    # hypothesis "this is x ray image" vs reference "x ray": p1 = 2/5, p2 = 1/4, no trigram match
    bleu, bleu_1, bleu_2, bleu_3 = bleu_scores("this is x ray image", "x ray")
    assert bleu_1 == pytest.approx(0.4, abs=1e-9) and bleu_2 == pytest.approx(0.25, abs=1e-9)
    assert bleu < 1e-100 and bleu_3 < 1e-300  # unsmoothed zero counts
    # brevity penalty exp(1 - 3/1) for "ct" vs "ct with contrast"
    assert bleu_scores("ct", "ct with contrast")[1] == pytest.approx(0.1353352832366127, abs=1e-12)
    assert bleu_scores("", "x") == (0.0, 0.0, 0.0, 0.0)
    item = open_item("This is an X-ray image.", "x-ray")
    assert item["bleu_1"] == pytest.approx(0.4) and item["bleu_2"] == pytest.approx(0.25)


def test_parity_summary_handles_empty_sides() -> None:
    summary = parity_summary([], [1.0, 0.0])
    assert summary["closed_accuracy"] == 50.0 and summary["open_recall"] is None and summary["bleu"] is None
    assert set(summary) == {"open_recall", "closed_accuracy", "open_precision", "open_f1", "open_exact",
                            "bleu", "bleu_1", "bleu_2", "bleu_3"}
