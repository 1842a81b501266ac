"""The synthetic text-only general subset (UIR's inquiries on the toy)."""

from __future__ import annotations

from pathlib import Path

from medvlm.data.sources import read_source
from medvlm.data.synthetic import general_text_pairs


def test_text_only_general_questions_are_read_as_text_only_samples(synthetic_dir: Path,
                                                                   synthetic_options: dict) -> None:
    samples, _ = read_source("synthetic", str(synthetic_dir), "train", subset="general_text", **synthetic_options)
    assert len(samples) == 5 * synthetic_options["general_images"]["train"]
    assert not any(sample.images for sample in samples)
    assert len({sample.question for sample in samples}) > 50
    first = samples[:5]
    assert first[1].question.startswith("How many sides does a")
    assert first[2].question.startswith("What is the opposite")
    again, _ = read_source("synthetic", str(synthetic_dir), "train", subset="general_text", **synthetic_options)
    assert [s.question for s in again] == [s.question for s in samples]


def test_a_directory_made_before_the_subset_existed_gains_it(synthetic_dir: Path, synthetic_options: dict) -> None:
    (synthetic_dir / "general_text_test.json").unlink()
    samples, _ = read_source("synthetic", str(synthetic_dir), "test", subset="general_text", **synthetic_options)
    assert len(samples) == 5 * synthetic_options["general_images"]["test"]


def test_answers_follow_the_question() -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    answers = dict(pair for _ in range(40) for pair in general_text_pairs(rng))
    assert answers["How many sides does a triangle have?"] == "three"
    assert answers["How many sides does a square have?"] == "four"
    assert answers["What is the opposite of left?"] == "right"
    assert answers["What is the opposite of top?"] == "bottom"
