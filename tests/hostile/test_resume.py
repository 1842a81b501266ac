"""A resumed checkpoint whose training-state files are not plain tensors (issue 11)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
import yaml

from medvlm.io import LOCK_FILE, MARKER
from tests.helpers.data_fixtures import write_image, write_json


def _tiny_run(tmp_path: Path) -> tuple[Path, Path]:
    """A two-step training recipe on two images (checkpoint every step) and its output directory."""
    for name in ("a.png", "b.png"):
        write_image(tmp_path / "images" / name, size=(16, 16))
    data = write_json(tmp_path / "train.json", [
        {"id": name, "image": f"{name}.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]}
        for name in ("a", "b")])
    out = tmp_path / "out"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"preset": "micro-clip-llama"},
        "data": {"train": [{"dataset": "llava", "path": str(data), "image_root": str(tmp_path / "images")}]},
        "train": {"max_steps": 2, "save_steps": 1, "per_device_batch_size": 1, "tensorboard": False},
        "output": {"dir": str(out)}}))
    return recipe, out


def test_opting_into_remote_code_is_recorded_in_the_runs_provenance(cli, tmp_path: Path) -> None:
    recipe, out = _tiny_run(tmp_path)
    assert cli("train", recipe, "model.trust_remote_code=true", "train.max_steps=1").status == 0
    assert json.loads((out / "provenance.json").read_text())["trust_remote_code"] is True


def test_a_poisoned_optimizer_file_is_named_not_unpickled(cli, tmp_path: Path) -> None:
    recipe, out = _tiny_run(tmp_path)
    assert cli("train", recipe).status == 0
    assert not (out / LOCK_FILE).exists() and json.loads((out / MARKER).read_text())["kind"] == "run"
    assert json.loads((out / "provenance.json").read_text())["trust_remote_code"] is False

    shutil.rmtree(out / "model")  # an interrupted run: resume from its last checkpoint
    checkpoint = out / "checkpoints" / "checkpoint-2"
    torch.save(argparse.Namespace(payload="not a tensor"), checkpoint / "optimizer.pt")
    result = cli("train", recipe, "--resume")
    result.refused(f"{checkpoint / 'optimizer.pt'}: not plain tensors", "nothing in it was run", within=30)
    assert not (out / LOCK_FILE).exists()  # released on the error path too

    state = checkpoint / "trainer_state.json"  # a damaged state file: transformers' JSONDecodeError traceback
    state.write_text(state.read_text()[:40])
    cli("train", recipe, "--resume").refused(f"{state}: not valid JSON", f"delete {checkpoint} and resume from an "
                                             "earlier checkpoint", within=30)
    assert not (out / LOCK_FILE).exists()


def test_a_truncated_checkpoint_file_is_named_before_the_model_loads(cli, tmp_path: Path) -> None:
    """Probe T07: a truncated model.safetensors in the newest checkpoint ended in a SafetensorError
    traceback from deep inside transformers' resume; a truncated optimizer.pt in a RuntimeError."""
    recipe, out = _tiny_run(tmp_path)
    assert cli("train", recipe).status == 0
    shutil.rmtree(out / "model")
    checkpoint = out / "checkpoints" / "checkpoint-2"
    advice = f"delete {checkpoint} and resume from an earlier checkpoint, or start again without --resume"
    for name, problem in (("model.safetensors", "not a complete safetensors file"),
                          ("optimizer.pt", "truncated or damaged (its zip directory is unreadable)")):
        file = checkpoint / name
        whole = file.read_bytes()
        file.write_bytes(whole[: len(whole) // 2])
        cli("train", recipe, "--resume").refused(f"{file}: {problem}", advice, within=10)
        assert not (out / LOCK_FILE).exists()
        file.write_bytes(whole)
    assert cli("train", recipe, "--resume").status == 0  # the mended checkpoint resumes


def test_a_trainer_state_with_fields_of_the_wrong_type_is_named(cli, tmp_path: Path) -> None:
    """Probe F5: ``"global_step": "two"`` ended in a TypeError traceback inside transformers."""
    recipe, out = _tiny_run(tmp_path)
    assert cli("train", recipe).status == 0
    shutil.rmtree(out / "model")
    state = out / "checkpoints" / "checkpoint-2" / "trainer_state.json"
    state.write_text(json.dumps({"global_step": "two", "log_history": 5}))
    cli("train", recipe, "--resume").refused(f"{state}: key 'global_step': expected int, got str",
                                             "resume from an earlier checkpoint", within=10)
