"""The real path end to end: real VQA-RAD and SLAKE files and images → finetune → predict → score.

A smoke test of the plumbing on data nobody on the team wrote, not an accuracy claim. Training uses
the VQA-RAD train questions whose images are in the sample (128) and the Chinese SLAKE test
questions whose images are (39, about 3 images); evaluation uses the English test questions with images present
(128 VQA-RAD, 232 SLAKE), so no evaluated question is trained on (SLAKE's images are shared).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medvlm.data.images import check_images, drop_bad_images
from medvlm.data.sources import read_source
from medvlm.eval.predict import PredictSettings, generate_answers
from medvlm.eval.score import read_answers, score
from medvlm.model.build import load_pretrained
from medvlm.recipe import load_recipe
from medvlm.train.stage import run_stage

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

OSF = "vqa_rad/osf_original/VQA_RAD Dataset Public.json"
SLAKE = "slake/Slake1.0"


def present(name: str, path: Path, split: str):
    """The questions whose images are in the sample folders (the rest are counted, not dropped silently)."""
    samples, report = read_source(name, str(path), split, policy="skip")
    kept = drop_bad_images(samples, check_images(samples, "header"), report, file=str(path))
    assert report.skipped == len(samples) - len(kept)
    return kept


def test_finetune_predict_and_score_on_real_files(real_data: Path, tmp_path: Path) -> None:
    recipe_file = tmp_path / "real.yaml"
    recipe_file.write_text(yaml.safe_dump({
        "name": "real-path",
        "model": {"preset": "micro-clip-llama"},
        "data": {"train": [
            {"dataset": "vqa_rad", "path": str(real_data / OSF), "split": "train"},
            {"dataset": "slake", "path": str(real_data / SLAKE), "split": "test", "options": {"language": "zh"}},
        ], "on_bad_record": "skip", "max_length": 128, "system_prompt": "", "prompt_style": "short_answer"},
        "train": {"stage": "finetune", "learning_rate": 1e-3, "per_device_batch_size": 8, "max_steps": 6,
                  "logging_steps": 1, "save_steps": 1000, "tensorboard": False},
        "output": {"dir": str(tmp_path / "run")},
    }))
    result = run_stage(load_recipe(recipe_file))
    report = json.loads((result.output_dir / "data_report.json").read_text())
    vqa_source, slake_source = report["sources"]
    assert (vqa_source["read"], vqa_source["kept"], vqa_source["images"]["present"]) == (2248, 128, 29)
    assert (slake_source["kept"], slake_source["images"]["present"]) == (39, 3)
    assert result.summary["global_step"] == 6 and result.summary["samples"] == 167

    model, processor = load_pretrained(result.model_dir)
    settings = PredictSettings(template="vicuna_v1", prompt_style="short_answer", batch_size=32, max_new_tokens=6,
                               system_prompt="", model_id="real-path")
    for name, path, expected in (("vqa_rad", real_data / OSF, (128, 80)), ("slake", real_data / SLAKE, (232, 91))):
        samples = present(name, path, "test")
        answers = tmp_path / f"{name}.jsonl"
        rows = generate_answers(model, processor, samples, settings, output=answers, show_progress=False)
        scores = score(samples, read_answers(answers))
        strict = scores["metrics"]["strict"]
        assert (scores["n"], strict["n_closed"]) == expected and len(rows) == scores["n"]
        assert {str(r["question_id"]) for r in rows} == {s.meta.source_id for s in samples}  # dataset qids
        assert 0 <= strict["closed_accuracy"] <= 100 and 0 <= strict["open_f1"] <= 100
        assert scores["missing_predictions"]["count"] == 0
