"""2-process runs on the CPU: torchrun DDP (gloo) and the deepspeed launcher (ZeRO-2, ZeRO-3 + LoRA).

Each matches a single-process run with the same global batch, step for step, and exits cleanly
(status 0: no SIGABRT from a process group left alive at exit).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from medvlm.recipe import load_recipe
from medvlm.train.stage import run_stage
from tests.conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.distributed]
GLOBAL_BATCH = 4
DEEPSPEED = REPO / "recipes" / "deepspeed"


def write_recipe(tmp: Path, synthetic_dir: Path, options: dict, name: str, per_device: int, **extra) -> Path:
    spec = {
        "name": name, "model": {"preset": "micro-clip-llama"},
        "data": {"train": [{"dataset": "synthetic", "path": str(synthetic_dir), "split": "train", "limit": 32,
                            "options": {"subset": "medical_vqa", **options}}],
                 "max_length": 96, "system_prompt": "",
                 "group_by_modality_length": False},  # the same global batches in every layout
        "train": {"stage": "finetune", "learning_rate": 1e-3, "per_device_batch_size": per_device, "max_steps": 4,
                  "save_steps": 2, "logging_steps": 1, "seed": 3, "warmup_ratio": 0.0, "tensorboard": False},
        "output": {"dir": str(tmp / name)},
    }
    for key, value in extra.items():
        section, field = key.split("__")
        spec.setdefault(section, {})[field] = value
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    extensions = os.environ.get("TORCH_EXTENSIONS_DIR") or str(Path.home() / ".cache" / "medvlm" / "torch_extensions")
    env = {**os.environ, "PYTHONPATH": str(REPO), "DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": extensions,
           "LOCAL_SIZE": "2", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-m", *args], cwd=tmp, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-4000:]}"
    assert "SIGABRT" not in done.stderr and "Aborted" not in done.stderr
    return done


def torchrun(recipe: Path, tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    return launch(["torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                   "-m", "medvlm", "train", str(recipe), *overrides], tmp)


def deepspeed(recipe: Path, tmp: Path, config: str, *overrides: str) -> subprocess.CompletedProcess:
    return launch(["deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
                   "--module", "medvlm", "train", str(recipe), f"train.deepspeed={DEEPSPEED / config}",
                   *overrides], tmp)


def step_losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "logs" / "train.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def state(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(model_dir).state_dict()


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory, synthetic_dir: Path, synthetic_options: dict) -> dict[str, Path]:
    """Single-process references with the full global batch on one device."""
    tmp = tmp_path_factory.mktemp("single")
    return {kind: run_stage(load_recipe(write_recipe(tmp, synthetic_dir, synthetic_options, kind, GLOBAL_BATCH,
                                                     **extra))).output_dir
            for kind, extra in {"full": {}, "lora": {"peft__method": "lora", "peft__r": 4,
                                                     "peft__dropout": 0.0}}.items()}


def test_torchrun_ddp_matches_a_single_process(single, tmp_path: Path, synthetic_dir: Path,
                                               synthetic_options: dict) -> None:
    path = write_recipe(tmp_path, synthetic_dir, synthetic_options, "ddp", GLOBAL_BATCH // 2)
    done = torchrun(path, tmp_path)
    out = tmp_path / "ddp"
    assert done.stdout.count("model:") == 2  # both ranks finished
    reference = step_losses(single["full"])
    assert len(step_losses(out)) == 4  # logged once per step (rank 0), not once per process
    assert step_losses(out) == pytest.approx(reference, abs=1e-4)
    assert max_difference(state(out / "model"), state(single["full"] / "model")) < 1e-4


def test_deepspeed_zero2_matches_a_single_process(single, tmp_path: Path, synthetic_dir: Path,
                                                  synthetic_options: dict) -> None:
    path = write_recipe(tmp_path, synthetic_dir, synthetic_options, "zero2", GLOBAL_BATCH // 2)
    deepspeed(path, tmp_path, "zero2.json")
    out = tmp_path / "zero2"
    assert step_losses(out) == pytest.approx(step_losses(single["full"]), abs=1e-4)
    assert max_difference(state(out / "model"), state(single["full"] / "model")) < 1e-4
    partitions = sorted(p.name for p in (out / "checkpoints" / "checkpoint-2" / "global_step2").glob("*optim*"))
    assert partitions == ["zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]


def test_lora_under_zero3_keeps_the_adapter_and_merges(single, tmp_path: Path, synthetic_dir: Path,
                                                       synthetic_options: dict) -> None:
    """ZeRO-3 partitions the parameters: saving gathers them, and the merge must not re-partition."""
    path = write_recipe(tmp_path, synthetic_dir, synthetic_options, "zero3", GLOBAL_BATCH // 2,
                        peft__method="lora", peft__r=4, peft__dropout=0.0)
    deepspeed(path, tmp_path, "zero3.json")
    out = tmp_path / "zero3"
    assert step_losses(out) == pytest.approx(step_losses(single["lora"]), abs=1e-4)
    with safe_open(out / "adapter" / "adapter_model.safetensors", "pt") as a, \
            safe_open(single["lora"] / "adapter" / "adapter_model.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert max(float((a.get_tensor(k) - b.get_tensor(k)).abs().max()) for k in a.keys()) < 1e-4
    assert max_difference(state(out / "model"), state(single["lora"] / "model")) < 1e-4
