"""Training: a stage end to end, logs, atomic checkpoints, projector lr, loss plugins, SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from medvlm.recipe import load_recipe
from medvlm.train.stage import run_stage
from medvlm.train.trainer import latest_checkpoint
from tests.conftest import REPO


def stage_recipe(tmp_path: Path, synthetic_dir: Path, options: dict, name: str, **train) -> Path:
    spec = {
        "name": name,
        "model": {"preset": "micro-clip-llama"},
        "data": {"train": [{"dataset": "synthetic", "path": str(synthetic_dir), "split": "train", "limit": 24,
                            "options": {"subset": "medical_vqa", **options}},
                           {"dataset": "synthetic", "path": str(synthetic_dir), "split": "train", "limit": 6,
                            "options": {"subset": "general_instruct", **options}}],
                 "max_length": 128, "system_prompt": ""},
        "train": {"stage": "finetune", "learning_rate": 1e-3, "per_device_batch_size": 4, "max_steps": 12,
                  "save_steps": 4, "save_total_limit": 5, "logging_steps": 1, "seed": 3, "tensorboard": False,
                  **train},
        "output": {"dir": str(tmp_path / name)},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    """State dict of a saved model (file keys use transformers' legacy llava layout: load, don't read)."""
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(model_dir).state_dict()


def test_stage_writes_model_logs_and_provenance(tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    recipe = load_recipe(stage_recipe(tmp_path, synthetic_dir, synthetic_options, "basic"))
    result = run_stage(recipe)
    out = result.output_dir
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "processor_config.json").is_file()
    assert yaml.safe_load((out / "recipe.resolved.yaml").read_text())["train"]["max_steps"] == 12
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["medvlm_version"] and provenance["metric_version"]
    rows = [json.loads(line) for line in (out / "logs" / "train.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 13))
    assert all(r["tokens_per_second"] > 0 for r in steps[1:]) and all("learning_rate" in r for r in steps)
    report = json.loads((out / "data_report.json").read_text())
    assert report["encoding"]["kept"] == 30 and report["sources"][0]["kept"] == 24
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        ["checkpoint-12", "checkpoint-4", "checkpoint-8"]
    assert result.summary["global_step"] == 12
    # the vision tower never moved (finetune freezes it); the projector did
    from medvlm.model.tiny import build_tiny

    initial = build_tiny("micro-clip-llama")[0].state_dict()
    trained = weights(out / "model")
    assert torch.equal(trained["model.vision_tower.embeddings.patch_embedding.weight"],
                       initial["model.vision_tower.embeddings.patch_embedding.weight"])
    assert not torch.equal(trained["model.multi_modal_projector.linear_1.weight"],
                           initial["model.multi_modal_projector.linear_1.weight"])


def test_rerunning_a_finished_stage_is_refused(tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    from medvlm.errors import MedvlmError

    path = stage_recipe(tmp_path, synthetic_dir, synthetic_options, "twice", max_steps=2, save_steps=100)
    run_stage(load_recipe(path))
    with pytest.raises(MedvlmError, match="already finished"):
        run_stage(load_recipe(path))
    run_stage(load_recipe(path, ["output.overwrite=true"]))


def test_projector_gets_its_own_learning_rate(tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    from medvlm.train import stage as stage_module

    seen = {}
    original = stage_module.MedvlmTrainer.create_optimizer

    def spy(self, model=None):
        optimizer = original(self, model)
        names = {id(p): n for n, p in self.model.named_parameters()}
        for group in optimizer.param_groups:
            kinds = {"projector" if "multi_modal_projector" in names[id(p)] else "other" for p in group["params"]}
            seen[tuple(sorted(kinds))] = group["lr"]
        return optimizer

    stage_module.MedvlmTrainer.create_optimizer = spy
    try:
        run_stage(load_recipe(stage_recipe(tmp_path, synthetic_dir, synthetic_options, "plr", max_steps=1,
                                           save_steps=100, projector_lr=2e-5, warmup_ratio=0.0,
                                           lr_scheduler="constant")))
    finally:
        stage_module.MedvlmTrainer.create_optimizer = original
    assert seen == {("projector",): pytest.approx(2e-5), ("other",): pytest.approx(1e-3)}


def test_loss_plugins_add_a_scaled_term(tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    """A plugin returning c adds c / accumulation steps per micro-batch: c per optimizer step."""

    class Constant:
        name = "const"

        def __call__(self, model, inputs, outputs):
            return torch.tensor(5.0)

    base = run_stage(load_recipe(stage_recipe(tmp_path, synthetic_dir, synthetic_options, "noplug", max_steps=3,
                                              save_steps=100, gradient_accumulation_steps=2)))
    plugged = run_stage(load_recipe(stage_recipe(tmp_path, synthetic_dir, synthetic_options, "plug", max_steps=3,
                                                 save_steps=100, gradient_accumulation_steps=2)),
                        loss_plugins=[Constant()])
    assert plugged.summary["train_loss"] == pytest.approx(base.summary["train_loss"] + 5.0, abs=1e-4)
    rows = [json.loads(x) for x in (plugged.output_dir / "logs" / "train.jsonl").read_text().splitlines()]
    assert all(r["loss_const"] == 5.0 for r in rows if "loss" in r)


def test_latest_checkpoint_ignores_incomplete_ones(tmp_path: Path) -> None:
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-8").mkdir()  # torn: no trainer state
    (tmp_path / ".staging" / "checkpoint-12").mkdir(parents=True)
    assert latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert latest_checkpoint(tmp_path / "none") is None


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, synthetic_dir: Path,
                                                          synthetic_options: dict) -> None:
    reference = run_stage(load_recipe(stage_recipe(tmp_path, synthetic_dir, synthetic_options, "straight")))
    path = stage_recipe(tmp_path, synthetic_dir, synthetic_options, "killed")
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen([sys.executable, "-m", "tests.helpers.slow_cli", "0.4", "train", str(path)],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (out / "checkpoints" / "checkpoint-8" / "trainer_state.json").exists():
        assert process.poll() is None, process.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint-8 within 4 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "model").exists() and latest_checkpoint(out / "checkpoints") is not None

    resumed = subprocess.run([sys.executable, "-m", "medvlm", "train", str(path), "--resume"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected, actual = weights(reference.model_dir), weights(out / "model")
    assert expected.keys() == actual.keys()
    worst = max(float((expected[k] - actual[k]).abs().max()) for k in expected)
    assert worst == 0.0, f"resumed weights differ by up to {worst}"


def test_lora_stage_trains_adapters_and_projector_and_saves_a_merged_model(
        tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    path = stage_recipe(tmp_path, synthetic_dir, synthetic_options, "lora", max_steps=3, save_steps=100,
                        tensorboard=True)
    recipe = load_recipe(path, ["peft.method=lora", "peft.r=4", "peft.alpha=8"])
    result = run_stage(recipe)
    trainable = result.summary["trainable"]
    assert set(trainable) == {"projector", "language_model"}
    from medvlm.model.tiny import build_tiny

    base = build_tiny("micro-clip-llama")[0]
    assert trainable["projector"] == sum(p.numel() for n, p in base.named_parameters() if "projector" in n)
    # LoRA: rank-4 adapters only, far fewer than the language model's own weights
    lm_total = sum(p.numel() for n, p in base.named_parameters() if "language_model" in n or "lm_head" in n)
    assert 0 < trainable["language_model"] < 0.2 * lm_total
    merged = weights(result.model_dir)
    assert not any("lora" in key for key in merged)
    assert merged.keys() == base.state_dict().keys()
    assert list((result.output_dir / "logs" / "tensorboard").glob("events.out.tfevents.*"))
