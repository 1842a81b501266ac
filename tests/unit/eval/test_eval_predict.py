"""Batched greedy prediction: identical to batch size 1, deterministic, resumable, prompt styles."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medvlm.data.prompts import LLAVA_MED_CLOSED
from medvlm.data.records import SampleMeta, vqa_sample
from medvlm.data.sources import read_source
from medvlm.errors import DataError
from medvlm.eval.predict import PredictSettings, generate_answers

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def questions(synthetic_dir: Path, synthetic_options: dict) -> list:
    medical, _ = read_source("synthetic", str(synthetic_dir), "test", subset="medical_vqa", limit=10,
                             **synthetic_options)
    general, _ = read_source("synthetic", str(synthetic_dir), "test", subset="general_vqa", limit=4,
                             **synthetic_options)
    text_only = [vqa_sample(id=f"text-{i}", question=q, answer="yes",
                            meta=SampleMeta(dataset="t", split="test", answer_type="CLOSED"))
                 for i, q in enumerate(["Is the sky blue?", "Is water wet on a warm and sunny day?"])]
    return medical + text_only + general


def texts(rows: list[dict]) -> dict:
    return {row["question_id"]: row["text"] for row in rows}


def test_batched_outputs_equal_batch_size_one(micro_model, questions) -> None:
    model, processor = micro_model
    single = generate_answers(model, processor, questions, PredictSettings(batch_size=1, max_new_tokens=8),
                              show_progress=False)
    batched = generate_answers(model, processor, questions, PredictSettings(batch_size=5, max_new_tokens=8),
                               show_progress=False)
    again = generate_answers(model, processor, questions, PredictSettings(batch_size=5, max_new_tokens=8),
                             show_progress=False)
    assert len(single) == len(questions) == 16
    assert texts(single) == texts(batched) == texts(again)
    # a random-init model babbles: different questions get different outputs, so the check is not vacuous
    assert len(set(texts(single).values())) > 3


def test_answer_file_rows_and_resume(micro_model, questions, tmp_path: Path) -> None:
    model, processor = micro_model
    settings = PredictSettings(batch_size=4, max_new_tokens=6, model_id="micro")
    full = tmp_path / "full.jsonl"
    generate_answers(model, processor, questions, settings, output=full, show_progress=False)
    lines = full.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert set(rows[0]) == {"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}
    assert rows[0]["model_id"] == "micro" and rows[0]["metadata"]["decoding"] == "greedy"
    # a run killed mid-write: five finished lines and half of the sixth
    partial = tmp_path / "partial.jsonl"
    partial.write_text("\n".join(lines[:5]) + "\n" + lines[5][: len(lines[5]) // 2])
    resumed = generate_answers(model, processor, questions, settings, output=partial, show_progress=False)
    assert len(resumed) == len(questions) - 5
    final = [json.loads(line) for line in partial.read_text().splitlines()]
    assert len(final) == len(questions) and len({r["question_id"] for r in final}) == len(questions)
    assert texts(final) == texts(rows)
    # nothing left to do
    assert generate_answers(model, processor, questions, settings, output=partial, show_progress=False) == []
    # resuming with other settings would mix two experiments in one file
    with pytest.raises(DataError, match="cannot resume: the file was written with other settings "
                                        r"\(prompt_style 'plain' → 'short_answer'\)"):
        generate_answers(
            model,
            processor,
            questions,
            PredictSettings(batch_size=4, max_new_tokens=6, model_id="micro", prompt_style="short_answer"),
            output=partial,
        )
    # a bad line in the middle is an error, not a reason to drop the answers after it
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([lines[0], "{oops", *lines[2:4]]) + "\n")
    with pytest.raises(DataError, match=r"broken\.jsonl: line 2 is not an answer row"):
        generate_answers(model, processor, questions, settings, output=broken)
    assert len(broken.read_text().splitlines()) == 4
    # a first row that does not say how it was made (another tool's file, a damaged record) is named
    # as such, not as a difference of settings (probe J12)
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text("\n".join([json.dumps({**rows[0], "metadata": "garbled"}), *lines[1:3]]) + "\n")
    with pytest.raises(DataError, match=r"foreign\.jsonl.*line 1 has no medvlm 'metadata' record"):
        generate_answers(model, processor, questions, settings, output=foreign)


def test_llava_med_prompt_style(micro_model, questions) -> None:
    model, processor = micro_model
    rows = generate_answers(
        model,
        processor,
        questions[:6],
        PredictSettings(prompt_style="llava_med_closed", max_new_tokens=2),
        show_progress=False,
    )
    by_id = {row["question_id"]: row for row in rows}
    for sample in questions[:6]:
        prompt = by_id[sample.meta.source_id]["prompt"]
        closed = sample.meta.answer_type == "CLOSED"
        assert prompt.endswith(LLAVA_MED_CLOSED) == closed
        assert prompt.startswith(sample.question)
    assert rows[0]["metadata"]["prompt_style"] == "llava_med_closed"


@pytest.mark.parametrize(("environment", "hidden"), [({"TQDM_DISABLE": "1"}, "True True"), ({}, "False True")])
def test_progress_bar_honours_tqdm_disable(environment: dict[str, str], hidden: str) -> None:
    """``predict`` passed ``disable=False``, which overrides tqdm's own TQDM_DISABLE switch (read when
    tqdm is imported, hence a fresh interpreter)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TQDM_")}
    code = ("from medvlm.eval.progress import progress_bar; "
            "print(progress_bar(3, 'predict').disable, progress_bar(3, 'predict', show=False).disable)")
    shown = subprocess.run([sys.executable, "-c", code], env={**env, **environment, "PYTHONPATH": str(REPO)},
                           capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == hidden
