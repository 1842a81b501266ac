"""Where the demo starts: the shipped general base (verified), or one built from scratch; one CPU thread."""

from __future__ import annotations

import json
import platform
import shutil
from pathlib import Path

import pytest
import torch

import medvlm.resources
from medvlm.cli import main
from medvlm.errors import MedvlmError
from medvlm.resources import GENERAL_BASE, recipes_dir
from medvlm.runs.demo import run_demo
from medvlm.runs.general_base import cpu_kind, load_build, model_digests
from medvlm.runs.pipeline import load_pipeline
from medvlm.runs.threads import cpu_threads

DEMO = recipes_dir() / "demo" / "pipeline.yaml"


def test_the_demo_pipeline_starts_from_the_shipped_base(tmp_path: Path) -> None:
    pipeline = load_pipeline(DEMO, [f"output.dir={tmp_path}"])
    stages = dict(pipeline.stages)
    assert list(stages) == ["align", "instruct", "finetune"]
    assert stages["align"].model.path == str(GENERAL_BASE) and stages["align"].model.preset is None
    assert stages["instruct"].model.path == str(tmp_path / "align" / "model")
    assert pipeline.recipe.eval.stages == ["finetune"]


def test_a_pipeline_model_override_moves_the_start_and_changes_the_recipe(tmp_path: Path) -> None:
    shipped = load_pipeline(DEMO, [f"output.dir={tmp_path}"])
    other = load_pipeline(DEMO, [f"output.dir={tmp_path}", "model.path=/elsewhere/model"])
    assert dict(other.stages)["align"].model.path == "/elsewhere/model"
    # a directory that ran from one base is never reused for a run from another (claim_output_dir)
    assert shipped.recipe.to_yaml() != other.recipe.to_yaml()


def test_the_build_pipeline_is_the_demo_tower_and_base_stages(tmp_path: Path) -> None:
    build = load_build(tmp_path)
    assert [name for name, _ in build.stages] == ["vision", "base"]
    vision, base = (recipe for _, recipe in build.stages)
    assert vision.train.stage == "contrastive" and vision.model.preset == "tiny-clip-llama"
    assert base.train.stage == "pretrain" and base.model.path == str(tmp_path / "vision" / "model")


def test_model_digests_leave_out_the_build_record() -> None:
    assert model_digests({"model.safetensors": "a", "build.json": "b", "config.json": "c"}) == {
        "model.safetensors": "a", "config.json": "c"}


def test_the_cpu_kind_names_the_kernels_torch_runs(monkeypatch) -> None:
    """The shipped base's bits are reproducible only on the kind of CPU its build record names."""
    here = cpu_kind()
    assert here.split()[0] == platform.machine() and torch.backends.cpu.get_cpu_capability() in here.split()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2-ONLY")
    assert cpu_kind() != here and "AVX2-ONLY" in cpu_kind().split()
    assert json.loads((GENERAL_BASE / "build.json").read_text())["cpu"].startswith("x86_64 ")  # built on one


def test_build_stage_overrides_need_from_scratch(tmp_path: Path) -> None:
    with pytest.raises(MedvlmError, match=r"vision\.train\.max_steps=3 address the general base's build stages"):
        run_demo(tmp_path / "demo", overrides=["vision.train.max_steps=3"])
    assert not (tmp_path / "demo").exists()


def test_a_corrupt_shipped_base_stops_the_demo_with_exit_2(tmp_path: Path, monkeypatch, capsys) -> None:
    copy = shutil.copytree(GENERAL_BASE, tmp_path / "general_base")
    (copy / "config.json").write_text("{}")
    monkeypatch.setattr(medvlm.resources, "GENERAL_BASE", copy)
    assert main(["demo", "--output", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert f"medvlm: error: {copy}: the shipped general base model is corrupt (config.json has sha256" in err
    assert "medvlm demo --from-scratch" in err
    assert not (tmp_path / "demo" / "align").exists()


def test_cpu_threads_sets_and_restores_the_intra_op_threads() -> None:
    before = torch.get_num_threads()
    with cpu_threads(3):
        assert torch.get_num_threads() == 3
        with cpu_threads():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
