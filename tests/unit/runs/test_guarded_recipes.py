"""The shipped guarded curricula resolve: stages as tasks, per-stage guards, no test split to tune on."""

from __future__ import annotations

import pytest

from medvlm.errors import RecipeError
from medvlm.recipe import validate
from medvlm.runs.guarded_demo import stage_differences
from medvlm.runs.pipeline import guarded_sequence, load_pipeline
from tests.conftest import REPO


def test_demo_guarded_curriculum() -> None:
    pipeline = load_pipeline(REPO / "recipes" / "demo" / "pipeline_guarded.yaml")
    sequence = guarded_sequence(pipeline)
    spec = sequence.spec
    assert [task.name for task in sequence.tasks] == ["align", "instruct", "finetune"]
    assert spec.method == "sac+uir" and spec.sac.ratio == "auto"
    assert [name for name, _ in sequence.probe_sets()] == ["medical", "general"]
    align, instruct, finetune = sequence.tasks
    assert align.guards.skip == ["uir"] and spec.sac_for(align.guards).auto.metric == "loss"
    assert spec.sac_for(instruct.guards).auto.metric == "loss"
    assert spec.sac_for(finetune.guards).auto.metric == "accuracy"
    # SAC's general validation set: another draw of the generator, which the rehearsing finetune stage
    # never trains on (the seed-0 general training questions are rehearsed)
    assert [(s.split, s.limit, s.options) for s in spec.sac.auto.general] == [
        ("train", 200, {"subset": "general_vqa", "seed": 1})]
    assert spec.uir.inquiries[0].options["subset"] == "general_text" and not spec.uir.drop_images
    assert align.stage.train.stage == "align" and align.stage.data.template == "plain"
    # the finetune stage rehearses general VQA training questions, for twice the plain demo's steps
    assert finetune.stage.train.max_steps == 2000
    assert [(s.split, s.limit, s.options["subset"]) for s in finetune.stage.data.train] == [
        ("train", None, "medical_vqa"), ("train", 1500, "general_vqa")]


def test_the_demo_summary_names_how_a_guarded_stage_trains_differently(tmp_path) -> None:
    """The side-by-side table compares curricula: it says where they did not train alike, and not
    where they merely write or start from."""
    plain = load_pipeline(REPO / "recipes" / "demo" / "pipeline.yaml", [f"output.dir={tmp_path}"])
    for name, recipe in plain.stages[:2]:  # the plain run finished align and instruct only
        (tmp_path / name).mkdir()
        (tmp_path / name / "recipe.resolved.yaml").write_text(recipe.to_yaml())
    guarded = load_pipeline(REPO / "recipes" / "demo" / "pipeline_guarded.yaml",
                            [f"output.dir={tmp_path / 'guarded'}", "instruct.train.learning_rate=3e-4"])
    assert stage_differences(tmp_path, guarded) == ["- instruct: train.learning_rate 0.0005 → 0.0003"]
    (tmp_path / "finetune").mkdir()
    (tmp_path / "finetune" / "recipe.resolved.yaml").write_text(plain.stages[2][1].to_yaml())
    assert stage_differences(tmp_path, guarded)[1] == (
        "- finetune: data.train synthetic medical_vqa train → synthetic medical_vqa train + synthetic general_vqa "
        "train (limit 1500); train.max_steps 1600 → 2000")


def test_llava_med_guarded_curriculum(monkeypatch) -> None:
    for variable in ("MEDVLM_BASE_MODEL", "LLAVA_MED_DATA", "VQA_RAD_DIR", "MEDVLM_RUNS", "MEDVLM_TEXT_INQUIRIES",
                     "MEDVLM_GENERAL_VALIDATION", "MEDVLM_GENERAL_PROBE"):
        monkeypatch.setenv(variable, "/nonexistent")
    pipeline = load_pipeline(REPO / "recipes" / "llava_med" / "pipeline_guarded.yaml")
    sequence = guarded_sequence(pipeline)
    assert [task.name for task in sequence.tasks] == ["align", "instruct", "vqa_rad"]
    assert [task.stage.peft.method for task in sequence.tasks] == ["none", "lora", "lora"]
    assert sequence.tasks[0].guards.skip == ["uir"]
    assert [name for name, _ in sequence.probe_sets()] == ["medical", "general"]  # align/instruct have no own probe
    assert sequence.spec.sac.auto.general[0].split == "validation"


def test_stage_probes_and_guards_that_would_be_ignored_are_refused() -> None:
    probe = [{"dataset": "synthetic", "split": "test", "options": {"subset": "medical_vqa"}}]
    tree = {"name": "p", "stages": [{"name": "a", "recipe": "a.yaml"}, {"name": "b", "recipe": "b.yaml"},
                                    {"name": "c", "recipe": "c.yaml", "eval": probe}],
            "continual": {"method": "sac"}}
    with pytest.raises(RecipeError, match="stages c have their own probe set .* not every task stage does"):
        validate(tree, "p.yaml")
    tree["continual"]["tasks_from"] = "c"  # c alone is the task sequence: its probe is every task's
    assert validate(tree, "p.yaml").stages[2].eval
    tree["stages"][0]["guards"] = {"skip": ["sac"]}
    with pytest.raises(RecipeError, match="stages a come before continual.tasks_from"):
        validate(tree, "p.yaml")
