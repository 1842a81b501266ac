"""LLaVA-Med's three published VQA-RAD answer files score against the OSF test split as they are.

Needs MEDVLM_REAL_DATA. The figures are pinned: they are what LLaVA-Med v1.0.0's run_eval_batch.py
computes for these files (parity, METHODS.md §4) and medvlm's strict metrics beside them; the
answer files come from early checkpoints (copyright lines, "Human:" prefixes), hence the low values.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.eval.answers import read_answers
from medvlm.eval.run import score_dataset
from medvlm.eval.score import score_answers
from tests.helpers.osf import osf_test_samples

pytestmark = pytest.mark.realdata

OSF = "vqa_rad/osf_original/VQA_RAD Dataset Public.json"
ANSWERS = "llava_med/llava/eval/eval_metrics"
# file → (parity open recall, parity closed accuracy, strict closed accuracy, strict open F1)
EXPECTED = {
    "answer-file-llava-zeorshot.jsonl": (
        12.041127437939796,
        30.147058823529413,
        20.58823529411765,
        2.1476540891397256,
    ),
    "answer-file.jsonl": (17.53258845437616, 48.529411764705884, 30.514705882352942, 4.328844298080837),
    "answer-file-1epoch.jsonl": (
        2.0391061452513966,
        24.264705882352942,
        23.16176470588235,
        2.2267366401444613,
    ),
}


def check(scores: dict, name: str) -> None:
    recall, closed, strict_closed, strict_f1 = EXPECTED[name]
    assert scores["n"] == 451 and scores["missing_predictions"]["count"] == 0
    assert scores["input_problems"]["count"] == 0
    strict = scores["metrics"]["strict"]
    assert (strict["n_open"], strict["n_closed"]) == (179, 272)
    assert scores["metrics"]["llava_med"]["open_recall"] == pytest.approx(recall, abs=1e-6)
    assert scores["metrics"]["llava_med"]["closed_accuracy"] == pytest.approx(closed, abs=1e-6)
    assert strict["closed_accuracy"] == pytest.approx(strict_closed, abs=1e-6)
    assert strict["open_f1"] == pytest.approx(strict_f1, abs=1e-6)
    assert scores["provenance"]["prompt_style"] == "llava_med_closed"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_answer_files_against_osf_records(real_data: Path, name: str) -> None:
    """The joining and scoring logic on the real files, OSF records read by the test's own helper."""
    samples = osf_test_samples(real_data / OSF)
    result = score_answers(samples, read_answers(real_data / ANSWERS / name), bootstrap=200)
    check(result.scores, name)
    # the lenient metric credits answers the strict one does not (never the other way round on closed)
    closed = [i for i in result.items if i["answer_type"] == "CLOSED"]
    assert all(i["llava_med"]["hit"] >= i["strict"]["correct"] for i in closed
               if i["strict"]["label"] in ("yes", "no"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_answer_files_through_the_vqa_rad_source(real_data: Path, tmp_path: Path, name: str) -> None:
    """The user's path: ``medvlm score --dataset vqa_rad`` with no manual conversion."""
    scores = score_dataset("vqa_rad", str(real_data / OSF), "test", real_data / ANSWERS / name,
                           tmp_path / "scores.json", bootstrap=200)
    check(scores, name)
