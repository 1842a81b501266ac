"""Pipeline and continual output directories are never reused for a different recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medvlm.errors import MedvlmError
from medvlm.recipe import load_recipe
from medvlm.train.outputs import claim_output_dir


def recipe_at(tmp_path: Path, out: Path, *overrides: str):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "micro-clip-llama"}, "output": {"dir": str(out)}}))
    return load_recipe(path, list(overrides))


def test_same_recipe_keeps_finished_work(tmp_path: Path) -> None:
    out = tmp_path / "run"
    claim_output_dir(out, recipe_at(tmp_path, out, "train.seed=1"), "continual run")
    (out / "tasks").mkdir()
    claim_output_dir(out, recipe_at(tmp_path, out, "train.seed=1"), "continual run")
    assert (out / "tasks").is_dir()
    assert "seed: 1" in (out / "recipe.resolved.yaml").read_text()


def test_different_recipe_is_refused_then_replaced_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "run"
    claim_output_dir(out, recipe_at(tmp_path, out, "train.seed=1"), "continual run")
    (out / "tasks").mkdir()
    with pytest.raises(MedvlmError, match=r"run: holds a continual run of a different recipe .*output.overwrite"):
        claim_output_dir(out, recipe_at(tmp_path, out, "train.seed=2"), "continual run")
    assert (out / "tasks").is_dir() and "seed: 1" in (out / "recipe.resolved.yaml").read_text()
    claim_output_dir(out, recipe_at(tmp_path, out, "train.seed=2", "output.overwrite=true"), "continual run")
    assert not (out / "tasks").exists()
    assert "seed: 2" in (out / "recipe.resolved.yaml").read_text()
