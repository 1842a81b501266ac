"""Hostile and careless recipes: alias bombs, cycles, huge values, out-of-range numbers (issue 11)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvlm.errors import RecipeError
from medvlm.recipe import load_recipe
from medvlm.runs.pipeline import load_pipeline

BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
name: *h
"""


def test_a_yaml_alias_bomb_is_refused_fast_and_briefly(cli, tmp_path: Path) -> None:
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMB)
    assert recipe.stat().st_size < 1024
    cli("plan", recipe).refused(f"{recipe}: refused:", "expands to more than 100,000 values", within=3, max_chars=400)


def test_a_self_referencing_yaml_is_refused(tmp_path: Path) -> None:
    recipe = tmp_path / "loop.yaml"
    recipe.write_text("description: &d [*d]\n")
    with pytest.raises(RecipeError, match="contains itself"):
        load_recipe(recipe)


def test_a_huge_wrong_value_is_shown_truncated(cli, tmp_path: Path) -> None:
    recipe = tmp_path / "big.yaml"
    recipe.write_text(yaml.safe_dump({"name": list(range(5_000)), "model": {"preset": "micro-clip-llama"}}))
    line = cli("plan", recipe).refused("key 'name': Input should be a valid string", within=10, max_chars=600)
    assert "[0, 1, 2, 3, ...]" in line


@pytest.mark.parametrize(("override", "message"), [
    ("train.max_steps=0", "must be at least 1, or -1 to train for train.epochs"),
    ("train.max_steps=-5", "must be at least 1, or -1 to train for train.epochs"),
    ("train.per_device_batch_size=0", "greater than or equal to 1"),
    ("continual.sac.ratio=3", "less than or equal to 1"),
    ("continual.mix.alpha=7", "less than or equal to 1"),
    ("train.save_total_limit=0", "greater than or equal to 1"),
    ("train.learning_rate=.inf", "finite number"),  # probe F8: trained with a NaN learning rate
    ("train.seed=-1", "greater than or equal to 0"),  # probe F9: numpy's ValueError traceback
    ("train.seed=4294967296", "less than or equal to 4294967295"),
    ("train.max_steps=" + "9" * 5000, "override 'train.max_steps': a number with more than 4300 digits"),  # F7
])
def test_out_of_range_recipe_numbers_are_refused(tmp_path: Path, override: str, message: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"continual": {"tasks": [{"name": "t", "train": [{"dataset": "llava"}],
                                                               "eval": [{"dataset": "llava"}]}]}}))
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe, [override])
    assert load_recipe(recipe, ["train.max_steps=-1"]).train.max_steps == -1  # -1: train for train.epochs


@pytest.mark.parametrize("argv", [
    ["consolidate", "--method", "sac", "--previous", "a", "--current", "b", "--output", "c", "--ratio", "-3"],
    ["consolidate", "--method", "mix", "--previous", "a", "--current", "b", "--output", "c", "--alpha", "7"],
    ["plan", "r.yaml", "--gpu-memory", "-5"],
    ["plan", "r.yaml", "--gpus", "0"],
    ["predict", "--model", "m", "--dataset", "llava", "--output", "o", "--batch-size", "0"],
    ["predict", "--model", "m", "--dataset", "llava", "--output", "o", "--max-new-tokens", "-1"],
    ["predict", "--model", "m", "--dataset", "llava", "--output", "o", "--limit", "-1"],
    ["data", "convert", "--dataset", "llava", "--output", "o", "--limit", "0"],
    ["serve", "--model", "m", "--max-new-tokens", "-1"],
    ["serve", "--model", "m", "--max-batch-size", "0"],
    ["serve", "--model", "m", "--port", "70000"],
    ["chat", "--model", "m", "--max-new-tokens", "0"],
    ["chat", "--model", "m", "--top-p", "0"],
    ["judge", "--questions", "q", "--answers", "a", "--output", "o", "--endpoint", "e", "--judge-model", "j",
     "--concurrency", "0"],
    ["predict", "--endpoint", "e", "--dataset", "llava", "--output", "o", "--temperature", "-1"],
    # probes F9, F10: a negative seed and absurd sizes ended in ValueError / MemoryError tracebacks
    ["score", "--dataset", "llava", "--predictions", "p", "--output", "o", "--seed", "-1"],
    ["score", "--dataset", "llava", "--predictions", "p", "--output", "o", "--bootstrap", "1000000000000"],
    ["data", "synth", "--output", "o", "--image-size", "100000"],
    ["predict", "--endpoint", "e", "--dataset", "llava", "--output", "o", "--timeout", "inf"],
])
def test_out_of_range_cli_numbers_exit_2(cli, argv: list[str]) -> None:
    result = cli(*argv)
    assert result.status == 2 and "is outside" in result.err and result.seconds < 1
    assert "e+" not in result.err  # integer bounds in full: [0, 4294967295], not [0, 4.29497e+09]


def test_pipeline_stage_names_are_unique_directory_names(tmp_path: Path) -> None:
    (tmp_path / "stage.yaml").write_text("model: {preset: micro-clip-llama}\n")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(yaml.safe_dump({"stages": [{"name": "a", "recipe": "stage.yaml"},
                                                   {"name": "a", "recipe": "stage.yaml"}]}))
    with pytest.raises(RecipeError, match="stage names must be unique; repeated: a"):
        load_pipeline(pipeline)
    pipeline.write_text(yaml.safe_dump({"stages": [{"name": "../../escape", "recipe": "stage.yaml"}]}))
    with pytest.raises(RecipeError, match=r"key 'stages\[0\].name': String should match pattern"):
        load_pipeline(pipeline)
