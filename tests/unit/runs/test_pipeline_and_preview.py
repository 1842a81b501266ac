"""Pipeline recipes (override routing, chaining) and `medvlm data preview`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvlm.cli import main
from medvlm.errors import RecipeError
from medvlm.runs.pipeline import load_pipeline


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture()
def pipeline_file(tmp_path: Path) -> Path:
    stage = {"model": {"preset": "micro-clip-llama"}, "train": {"stage": "finetune", "max_steps": 100},
             "data": {"train": [{"dataset": "llava", "path": "${output_dir}/data.json"}]}}
    write(tmp_path / "one.yaml", stage)
    write(tmp_path / "two.yaml", {**stage, "train": {"stage": "instruct", "max_steps": 200}})
    return write(tmp_path / "pipe.yaml", {
        "name": "p", "output": {"dir": str(tmp_path / "out")},
        "stages": [{"name": "first", "recipe": "one.yaml", "overrides": {"train.learning_rate": 0.01}},
                   {"name": "second", "recipe": "two.yaml", "overrides": {"train": {"seed": 9}}}],
        "eval": {"stages": ["first"]}})


def test_overrides_route_to_pipeline_one_stage_or_all(pipeline_file: Path, tmp_path: Path) -> None:
    pipeline = load_pipeline(pipeline_file, ["second.train.max_steps=5", "*.train.logging_steps=3",
                                             "eval.batch_size=4"])
    stages = dict(pipeline.stages)
    assert pipeline.recipe.eval.batch_size == 4
    assert stages["first"].train.max_steps == 100 and stages["second"].train.max_steps == 5
    assert stages["first"].train.logging_steps == stages["second"].train.logging_steps == 3
    assert stages["first"].train.learning_rate == 0.01 and stages["second"].train.seed == 9
    # outputs nest under the pipeline; ${output_dir} is the pipeline's; stage two starts from stage one
    out = tmp_path / "out"
    assert stages["first"].output.dir == str(out / "first")
    assert stages["first"].data.train[0].path == f"{out}/data.json"
    assert stages["second"].model.path == str(out / "first" / "model") and stages["second"].model.preset is None
    assert stages["first"].model.preset == "micro-clip-llama"


def test_pipeline_model_section_starts_the_first_stage_and_its_family_holds_for_every_stage(
        pipeline_file: Path) -> None:
    stages = dict(load_pipeline(pipeline_file, ["model.preset=tiny-clip-llama", "model.family=gemma3"]).stages)
    assert stages["first"].model.preset == "tiny-clip-llama" and stages["second"].model.preset is None
    assert stages["first"].model.family == stages["second"].model.family == "gemma3"
    stages = dict(load_pipeline(pipeline_file).stages)  # without it, the stage recipes decide
    assert stages["first"].model.preset == "micro-clip-llama"
    assert stages["first"].model.family == stages["second"].model.family == "auto"


def test_stage_overrides_are_part_of_the_pipelines_resolved_recipe(pipeline_file: Path) -> None:
    """A rerun with other stage settings must be a different recipe (claim_output_dir compares the
    pipeline's resolved recipe), never a silent reuse of stages finished with the old ones."""
    plain = load_pipeline(pipeline_file)
    changed = load_pipeline(pipeline_file, ["first.train.max_steps=5", "*.train.seed=3"])
    assert plain.recipe.to_yaml() != changed.recipe.to_yaml()
    first = changed.recipe.stages[0].overrides
    assert first == {"train.learning_rate": 0.01, "train.max_steps": 5, "train.seed": 3}
    assert dict(changed.stages)["first"].train.max_steps == 5 and dict(changed.stages)["second"].train.seed == 3
    assert load_pipeline(pipeline_file, ["first.train.max_steps=5", "*.train.seed=3"]).recipe.to_yaml() == \
        changed.recipe.to_yaml()


def test_bad_stage_override_names_the_stage_file(pipeline_file: Path) -> None:
    with pytest.raises(RecipeError, match=r"two.yaml \(stage 'second' of .*pipe.yaml\): unknown key 'train.stpes'"):
        load_pipeline(pipeline_file, ["second.train.stpes=5"])


def test_eval_stages_must_exist(pipeline_file: Path) -> None:
    with pytest.raises(RecipeError, match="unknown stage"):
        load_pipeline(pipeline_file, ["eval.stages=[third]"])


def test_train_refuses_a_pipeline_recipe(pipeline_file: Path, capsys) -> None:
    assert main(["train", str(pipeline_file)]) == 2
    assert "medvlm pipeline" in capsys.readouterr().err


def test_data_preview_shows_prompt_and_exact_labels(synthetic_dir: Path, synthetic_options: dict,
                                                    tmp_path: Path, capsys) -> None:
    recipe = write(tmp_path / "r.yaml", {
        "model": {"preset": "micro-clip-llama"},
        "data": {"template": "vicuna_v1", "system_prompt": "",
                 "train": [{"dataset": "synthetic", "path": str(synthetic_dir), "split": "train",
                            "options": {"subset": "medical_instruct", **synthetic_options}}]}})
    assert main(["data", "preview", str(recipe), "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("── medical-train-") == 2
    assert "<image>×4" in out  # micro preset: 4 image tokens, collapsed for reading
    assert "prompt:" in out and "labels:" in out
    assert "</s>'" in out and "USER:" in out
