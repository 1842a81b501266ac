"""`medvlm plan` counts the frozen teacher a continual guard keeps beside the trained model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from medvlm.cli import main
from medvlm.model.build import load_model
from medvlm.model.plan import plan_memory
from medvlm.recipe import ModelSpec
from medvlm.runs.pipeline import load_pipeline
from medvlm.runs.planning import plan_run

SOURCE = {"dataset": "synthetic", "path": "/nonexistent", "split": "train", "options": {"subset": "medical_vqa"}}


def _pipeline(tmp_path: Path) -> Path:
    stage = {"model": {"preset": "micro-clip-llama"}, "data": {"max_length": 64, "train": [SOURCE]},
             "train": {"stage": "finetune", "per_device_batch_size": 2}}
    (tmp_path / "stage.yaml").write_text(yaml.safe_dump(stage))
    (tmp_path / "align.yaml").write_text(yaml.safe_dump({**stage, "train": {"stage": "align",
                                                                             "per_device_batch_size": 2}}))
    pipeline = {"name": "p", "output": {"dir": str(tmp_path / "out")},
                "stages": [{"name": "base", "recipe": "stage.yaml"}, {"name": "align", "recipe": "align.yaml"},
                           {"name": "finetune", "recipe": "stage.yaml", "guards": {"skip": ["uir"]}}],
                "continual": {"method": "sac+uir", "tasks_from": "align",
                              "uir": {"inquiries": [SOURCE], "drop_images": True}}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    return path


def test_plan_counts_the_teacher_of_guarded_stages_only(tmp_path: Path, capsys) -> None:
    model, _ = load_model(ModelSpec(preset="micro-clip-llama"))
    whole_model = sum(p.numel() * p.element_size() for p in model.parameters())
    plans = dict(plan_run(_pipeline(tmp_path)))
    assert list(plans) == ["base", "align", "finetune"]
    # base builds the initial model (before tasks_from); finetune turns UIR off: no teacher for either
    assert "teacher copy" not in plans["base"].terms and "teacher copy" not in plans["finetune"].terms
    align = plans["align"]
    assert align.terms["teacher copy"] == whole_model  # the whole pre-stage model, float32
    stage = load_pipeline(_pipeline(tmp_path)).stages[1][1]
    without = plan_memory(stage.model_copy(update={"model": ModelSpec(preset="micro-clip-llama")}))
    assert align.total - without.total == whole_model

    assert main(["plan", str(_pipeline(tmp_path)), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report) == ["base", "align", "finetune"]
    assert report["align"]["terms_gib"]["teacher copy"] == round(whole_model / 2**30, 3)


def test_plan_of_a_continual_recipe_plans_each_task(tmp_path: Path) -> None:
    recipe = {"model": {"preset": "micro-clip-llama"}, "data": {"max_length": 64},
              "train": {"per_device_batch_size": 2},
              "continual": {"method": "lwf", "tasks": [
                  {"name": "a", "train": [SOURCE], "eval": [SOURCE]},
                  {"name": "b", "train": [SOURCE], "eval": [SOURCE], "guards": {"skip": ["lwf"]}}]}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(recipe))
    plans = dict(plan_run(path))
    assert "teacher copy" in plans["a"].terms and "teacher copy" not in plans["b"].terms
