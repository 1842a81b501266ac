"""Recipes: inheritance, overrides, validation messages, variables, the shipped recipe files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvlm.errors import RecipeError
from medvlm.recipe import load_recipe, parse_override
from tests.conftest import REPO


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_base_inheritance_merges_sections_and_replaces_lists(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    write(tmp_path / "base" / "defaults.yaml", {
        "train": {"learning_rate": 1e-3, "epochs": 2.0, "seed": 7},
        "data": {"train": [{"dataset": "llava", "path": "a.json"}], "max_length": 512}})
    child = write(tmp_path / "child.yaml", {
        "base": "base/defaults.yaml", "train": {"learning_rate": 5e-4},
        "data": {"train": [{"dataset": "llava", "path": "b.json"}]}})
    recipe = load_recipe(child)
    assert recipe.train.learning_rate == 5e-4
    assert recipe.train.epochs == 2.0 and recipe.train.seed == 7
    assert [s.path for s in recipe.data.train] == ["b.json"]
    assert recipe.data.max_length == 512


def test_dotted_overrides_get_yaml_types(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", {"train": {"stage": "finetune"}})
    recipe = load_recipe(path, ["train.learning_rate=1e-4", "train.max_steps=12", "train.bf16=true",
                                "train.trainable=[projector]", "name=my-run"])
    assert recipe.train.learning_rate == pytest.approx(1e-4)
    assert recipe.train.max_steps == 12 and recipe.train.bf16 is True
    assert recipe.train.trainable == ["projector"]
    assert recipe.name == "my-run"


def test_parse_override_rejects_missing_equals() -> None:
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        parse_override("train.learning_rate")


def test_unknown_key_names_nearest_valid_key(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", {"train": {"learnig_rate": 1e-4}})
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert str(path) in message
    assert "unknown key 'train.learnig_rate'" in message
    assert "did you mean 'learning_rate'?" in message


def test_unknown_override_is_rejected_like_a_file_key(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", {})
    with pytest.raises(RecipeError, match=r"unknown key 'peft.rank'"):
        load_recipe(path, ["peft.rank=8"])


def test_unknown_section_suggests_section(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", {"trian": {}})
    with pytest.raises(RecipeError, match="did you mean 'train'"):
        load_recipe(path)


def test_wrong_type_names_the_key_path(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml",
                 {"train": {"epochs": "three"}, "data": {"train": [{"dataset": "x", "limit": -1}]}})
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "key 'train.epochs'" in message and "'three'" in message
    assert "key 'data.train[0].limit'" in message


def test_missing_recipe_file_is_a_recipe_error(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_base_cycle_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", {"base": "b.yaml"})
    write(tmp_path / "b.yaml", {"base": "a.yaml"})
    with pytest.raises(RecipeError, match="loops"):
        load_recipe(tmp_path / "a.yaml")


def test_variables_expand_and_unset_ones_fail_clearly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MY_DATA", "/data/here")
    path = write(tmp_path / "r.yaml", {"name": "exp1", "output": {"dir": "runs/${name}"},
                                       "data": {"train": [{"dataset": "llava", "path": "${MY_DATA}/x.json"},
                                                          {"dataset": "llava", "path": "${output_dir}/y.json"}]}})
    recipe = load_recipe(path)
    assert recipe.output.dir == "runs/exp1"
    assert recipe.data.train[0].path == "/data/here/x.json"
    assert recipe.data.train[1].path == "runs/exp1/y.json"
    monkeypatch.delenv("MY_DATA")
    with pytest.raises(RecipeError, match=r"\$\{MY_DATA\} is not set"):
        load_recipe(path)


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    path = write(tmp_path / "r.yaml", {"train": {"learning_rate": 3e-4}})
    recipe = load_recipe(path)
    again = write(tmp_path / "again.yaml", yaml.safe_load(recipe.to_yaml()))
    assert load_recipe(again).model_dump(exclude={"source_file"}) == recipe.model_dump(exclude={"source_file"})


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "recipes" / "demo").glob("*.yaml")))
def test_shipped_demo_recipes_validate(name: str) -> None:
    pipelines = {"general_base.yaml": ["vision", "base"], "pipeline.yaml": ["align", "instruct", "finetune"]}
    if name in pipelines:
        from medvlm.runs.pipeline import load_pipeline

        pipeline = load_pipeline(REPO / "recipes" / "demo" / name, ["output.dir=/tmp/x"])
        assert [stage for stage, _ in pipeline.stages] == pipelines[name]
        # later stages start from the previous stage's model
        assert pipeline.stages[1][1].model.path == f"/tmp/x/{pipelines[name][0]}/model"
    else:
        load_recipe(REPO / "recipes" / "demo" / name)


def test_llava_med_recipes_carry_published_settings(monkeypatch) -> None:
    for var in ("MEDVLM_BASE_MODEL", "LLAVA_MED_DATA", "MEDVLM_RUNS", "VQA_RAD_DIR"):
        monkeypatch.setenv(var, f"/local/{var.lower()}")
    folder = REPO / "recipes" / "llava_med"
    align = load_recipe(folder / "stage1_align.yaml")
    assert (align.train.stage, align.train.learning_rate, align.train.epochs) == ("align", 2e-3, 1)
    assert align.data.template == "plain" and align.train.bf16 and align.train.gradient_checkpointing
    instruct = load_recipe(folder / "stage2_instruct.yaml")
    assert (instruct.train.learning_rate, instruct.train.epochs) == (2e-5, 3)
    assert instruct.train.per_device_batch_size * instruct.train.gradient_accumulation_steps * 8 == 128
    assert Path(instruct.train.deepspeed).is_file()
    finetune = load_recipe(folder / "stage3_vqa_rad.yaml")
    assert finetune.train.learning_rate == 2e-5 and finetune.eval.prompt_style == "llava_med_closed"
    from medvlm.runs.pipeline import load_pipeline

    assert [n for n, _ in load_pipeline(folder / "pipeline.yaml").stages] == ["align", "instruct", "vqa_rad"]


def test_llava_med_recipe_without_paths_names_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("MEDVLM_BASE_MODEL", raising=False)
    monkeypatch.setenv("LLAVA_MED_DATA", "/x")
    monkeypatch.setenv("MEDVLM_RUNS", "/y")
    with pytest.raises(RecipeError, match=r"MEDVLM_BASE_MODEL"):
        load_recipe(REPO / "recipes" / "llava_med" / "stage1_align.yaml")
