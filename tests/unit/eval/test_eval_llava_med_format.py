"""LLaVA-Med answer files joined to OSF VQA-RAD records by qid, from hand-written fixtures.

The same logic the real-data test runs on the 3 published answer files (tests/realdata), proved here
without the shared data or the ``vqa_rad`` source: OSF records as the OSF file has them (string qid
"0", an int answer, "CLOSED " with a trailing space, case variation), answer lines as LLaVA-Med wrote
them (closed prompts with the options suffix, "Human:" prefixes, garbage).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvlm.eval.answers import read_answers
from medvlm.eval.score import score_answers
from tests.helpers.osf import osf_test_samples

OSF = [
    {
        "qid": "0",
        "phrase_type": "freeform",
        "image_name": "synpic54610.jpg",
        "image_organ": "HEAD",
        "question": "Are regions of the brain infarcted?",
        "question_type": "PRES",
        "answer": "Yes",
        "answer_type": "CLOSED",
    },
    {
        "qid": 10,
        "phrase_type": "test_freeform",
        "image_name": "synpic42202.jpg",
        "image_organ": "CHEST",
        "question": "Is there evidence of an aortic aneurysm?",
        "question_type": "PRES",
        "answer": "yes",
        "answer_type": "CLOSED",
    },
    {
        "qid": 12,
        "phrase_type": "test_para",
        "image_name": "synpic42202.jpg",
        "image_organ": "CHEST",
        "question": "Is there airspace consolidation on the left side?",
        "question_type": "POS, PRES",
        "answer": "Yes",
        "answer_type": "CLOSED ",
    },
    {
        "qid": 21,
        "phrase_type": "test_freeform",
        "image_name": "synpic29265.jpg",
        "image_organ": "CHEST",
        "question": "How many ribs are visible?",
        "question_type": "COUNT",
        "answer": 4,
        "answer_type": "OPEN",
    },
    {
        "qid": 33,
        "phrase_type": "test_freeform",
        "image_name": "synpic29265.jpg",
        "image_organ": "CHEST",
        "question": "What type of imaging is this?",
        "question_type": "MODALITY",
        "answer": "X-ray",
        "answer_type": "OPEN",
    },
    {
        "qid": 40,
        "phrase_type": "test_para",
        "image_name": "synpic31116.jpg",
        "image_organ": "ABD",
        "question": "Is the liver normal?",
        "question_type": "ABN",
        "answer": "No",
        "answer_type": "CLOSED",
    },
]
SUFFIX = " Please choose from the following two options: [yes, no]"
ANSWERS = [
    {
        "question_id": 10,
        "prompt": OSF[1]["question"] + SUFFIX,
        "text": "Human: Based on the chest X-ray, there is no evidence of an aortic aneurysm.",
        "answer_id": "KUzuZ7PhVZwfUcDVx57D3r",
        "model_id": "/home/someone/llava/vqa_rad",
        "metadata": {},
    },
    {
        "question_id": 12,
        "prompt": OSF[2]["question"] + " Please choose from the following two options: [Yes, No]",
        "text": "Human: Yes, there is airspace consolidation on the left side.",
        "answer_id": "a",
        "model_id": "/home/someone/llava/vqa_rad",
        "metadata": {},
    },
    {
        "question_id": 21,
        "prompt": OSF[3]["question"],
        "text": "There are four ribs visible.",
        "answer_id": "b",
        "model_id": "/home/someone/llava/vqa_rad",
        "metadata": {},
    },
    {
        "question_id": 33,
        "prompt": OSF[4]["question"],
        "text": "2019-04-29 17:37:46./site_media/uploads/axial_plane.png",
        "answer_id": "c",
        "model_id": "/home/someone/llava/vqa_rad",
        "metadata": {},
    },
    {
        "question_id": 40,
        "prompt": OSF[5]["question"] + SUFFIX,
        "text": "I am not sure; the liver looks normal.",
        "answer_id": "d",
        "model_id": "/home/someone/llava/vqa_rad",
        "metadata": {},
    },
]


def write_answers(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_llava_med_answer_lines_join_osf_records_by_qid(tmp_path: Path) -> None:
    samples = osf_test_samples(OSF)
    assert [s.meta.source_id for s in samples] == ["10", "12", "21", "33", "40"]  # train record "0" left out
    scores = score_answers(
        samples, read_answers(write_answers(tmp_path / "answer-file.jsonl", ANSWERS)), bootstrap=0
    ).scores
    assert scores["n"] == 5 and scores["missing_predictions"]["count"] == 0
    parity, strict = scores["metrics"]["llava_med"], scores["metrics"]["strict"]
    # closed: 10 "yes" ⊄ "...no evidence of an aortic aneurysm" → 0; 12 → 1; 40 "no" ⊂ "i am not sure..." → 1
    assert parity["closed_accuracy"] == pytest.approx(200 / 3)
    # strict: 10 declarative (unanswered), 12 yes ✓ after the "Human:" tag, 40 hedge
    assert strict["closed_accuracy"] == pytest.approx(100 / 3)
    assert strict["closed_unanswered"] == pytest.approx(200 / 3)
    # open: 21 "4" vs "there are 4 ribs visible" → recall 1; 33 "x ray" vs the garbage → 0
    assert parity["open_recall"] == pytest.approx(50.0)
    assert parity["open_precision"] == pytest.approx(100 * (1 / 5) / 2)
    provenance = scores["provenance"]
    assert provenance["prompt_style"] == "llava_med_closed"
    assert provenance["prompt_style_source"] == "inferred from the prompts in the answer file"
    assert provenance["model_id"] == "/home/someone/llava/vqa_rad"
    assert provenance["decoding"] == "not recorded in the answer file"
    assert set(scores["breakdown"]["question_type"]) == {"ABN", "COUNT", "MODALITY", "POS, PRES", "PRES"}
    assert scores["breakdown"]["organ"]["CHEST"]["llava_med.closed_accuracy"]["n"] == 2


def test_answer_for_a_train_qid_is_flagged(tmp_path: Path) -> None:
    rows = [*ANSWERS, {"question_id": 0, "prompt": OSF[0]["question"] + SUFFIX, "text": "Yes"}]
    path = write_answers(tmp_path / "answers.jsonl", rows)
    with pytest.raises(
        Exception, match="1 prediction\\(s\\) for question ids not in the reference set, e.g. 0"
    ):
        score_answers(osf_test_samples(OSF), read_answers(path))
    scores = score_answers(
        osf_test_samples(OSF), read_answers(path, "skip"), policy="skip", bootstrap=0
    ).scores
    assert scores["input_problems"]["count"] == 1 and scores["n"] == 5
