"""Pipeline and continual output directories are never reused for a different recipe."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml

from medvlm.errors import MedvlmError
from medvlm.recipe import load_recipe
from medvlm.train.outputs import claim_output_dir, prepare_output_dir


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


def test_other_ranks_leave_a_stage_directory_to_the_main_process(tmp_path: Path, monkeypatch) -> None:
    """CI saw rank 1 refuse the main's half-written marker (a temp file) as someone else's files."""
    out = tmp_path / "stage"
    out.mkdir()
    (out / ".medvlm.json.abc123.tmp").write_text("{")  # the main process is writing its marker
    recipe = recipe_at(tmp_path, out)
    monkeypatch.setenv("RANK", "1")
    assert prepare_output_dir(recipe, resume=False).root == out
    # nothing read as foreign, nothing written
    assert sorted(p.name for p in out.iterdir()) == [".medvlm.json.abc123.tmp"]
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(MedvlmError, match="holds files medvlm did not write"):
        prepare_output_dir(recipe, resume=False)  # the main process still refuses someone's files


def test_other_ranks_wait_for_the_main_process_to_claim_a_pipeline_directory(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    recipe = recipe_at(tmp_path, out, "train.seed=3")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(MedvlmError, match=r"run: the main process did not claim this pipeline run within 0 s"):
        claim_output_dir(out, recipe, "pipeline run", wait=0.3)
    assert not out.exists()  # a non-main rank never creates, marks or clears the directory

    def main_claims() -> None:  # what the main process writes last, after any clearing
        out.mkdir()
        (out / "recipe.resolved.yaml").write_text(recipe.to_yaml())

    main = threading.Timer(0.3, main_claims)
    main.start()
    claim_output_dir(out, recipe, "pipeline run", wait=10)  # returns once the main's recipe is there
    main.join()
    assert sorted(p.name for p in out.iterdir()) == ["recipe.resolved.yaml"]
