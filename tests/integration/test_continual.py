"""Continual runs end to end on the micro model: guards, consolidation, the accuracy matrix, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from medvlm.continual import ConsolidationConfig
from medvlm.continual.checkpoints import consolidate_checkpoints, load_update
from medvlm.continual.sac import consolidate_delta
from medvlm.data.sources import read_source
from medvlm.errors import MedvlmError, RecipeError
from medvlm.recipe import load_recipe
from medvlm.runs.continual import run_continual


def continual_recipe(tmp_path: Path, synthetic_dir: Path, options: dict, method: str, name: str,
                     **extra) -> Path:
    def source(subset: str, split: str, limit: int, types: list[str] | None = None) -> dict:
        opts = {"subset": subset, **options, **({"question_types": types} if types else {})}
        return {"dataset": "synthetic", "path": str(synthetic_dir), "split": split, "limit": limit, "options": opts}

    spec = {
        "name": name,
        "model": {"preset": "micro-clip-llama"},
        "data": {"max_length": 128, "system_prompt": ""},
        "train": {"stage": "finetune", "learning_rate": 2e-3, "per_device_batch_size": 4, "max_steps": 4,
                  "logging_steps": 1, "save_steps": 1000, "seed": 5, "tensorboard": False},
        "eval": {"batch_size": 8, "max_new_tokens": 4},
        "continual": {
            "method": method,
            "tasks": [
                {"name": "modality", "train": [source("medical_vqa", "train", 12, ["MODALITY"])],
                 "eval": [source("medical_vqa", "test", 6, ["MODALITY"])]},
                {"name": "presence", "train": [source("medical_vqa", "train", 12, ["PRES"])],
                 "eval": [source("medical_vqa", "test", 6, ["PRES"])], "overrides": {"train.max_steps": 3}},
            ],
            "probes": [{"name": "general", "eval": [source("general_vqa", "test", 6)]}],
            "uir": {"inquiries": [source("general_vqa", "train", 10)], "drop_images": True, "ratio": 0.5},
            "ewc": {"fisher_samples": 4},
            "replay": {"buffer_size": 5, "ratio": 0.5},
            **extra.pop("continual", {}),
        },
        "output": {"dir": str(tmp_path / name)},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def train_log(task_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (task_dir / "train" / "logs" / "train.jsonl").read_text().splitlines()]


def test_sac_uir_run_writes_the_accuracy_matrix_and_resumes(tmp_path: Path, synthetic_dir: Path,
                                                            synthetic_options: dict) -> None:
    recipe = load_recipe(continual_recipe(tmp_path, synthetic_dir, synthetic_options, "sac+uir", "sacuir"))
    record = run_continual(recipe).record
    out = tmp_path / "sacuir"
    saved = json.loads((out / "continual.json").read_text())
    assert saved == record
    assert list(saved) == ["method", "seed", "tasks", "probes", "accuracy", "metrics", "ratio_sweeps", "provenance"]
    assert saved["ratio_sweeps"] == {}  # a fixed ratio: no sweep
    assert saved["method"] == "sac+uir" and saved["seed"] == 5
    assert saved["tasks"] == ["modality", "presence"] and saved["probes"] == ["modality", "presence", "general"]
    assert len(saved["accuracy"]) == 3 and all(len(row) == 3 for row in saved["accuracy"])
    assert all(0.0 <= value <= 100.0 for row in saved["accuracy"] for value in row)
    assert set(saved["metrics"]) == {"avg", "last", "bwt", "fwt", "forgetting", "general_retention"}
    a = saved["accuracy"]
    assert saved["metrics"]["bwt"] == pytest.approx(a[2][0] - a[1][0], abs=1e-3)
    assert saved["metrics"]["last"] == pytest.approx((a[2][0] + a[2][1]) / 2, abs=1e-3)

    first = out / "tasks" / "01-modality"
    # UIR: inquiries were mixed in (text batches carry only the UIR term) and the term was logged
    task = json.loads((first / "task.json").read_text())
    assert task["guards"]["uir"]["inquiries"] == 6
    assert any("loss_uir" in row for row in train_log(first))
    # SAC: θ_t is θ_{t−1} + SAC(θ̂_t − θ_{t−1}), not θ̂_t
    assert task["consolidation"]["method"] == "sac" and task["consolidation"]["tensors_smoothed"] > 0
    update = load_update(out / "initial" / "model", first / "train" / "model")
    final = load_update(out / "initial" / "model", first / "model").current
    key = "model.language_model.layers.0.mlp.down_proj.weight"
    delta = update.current[key] - update.previous[key]
    assert torch.allclose(final[key], update.previous[key] + consolidate_delta(delta, 0.2), atol=1e-6)
    assert not torch.allclose(final[key], update.current[key])

    # a rerun finds every task complete and rewrites the same record without training
    stamp = (first / "train" / "model" / "model.safetensors").stat().st_mtime_ns
    again = run_continual(load_recipe(continual_recipe(tmp_path, synthetic_dir, synthetic_options, "sac+uir",
                                                       "sacuir"))).record
    assert again["accuracy"] == record["accuracy"]
    assert (first / "train" / "model" / "model.safetensors").stat().st_mtime_ns == stamp


def test_lwf_ewc_replay_run(tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    path = continual_recipe(tmp_path, synthetic_dir, synthetic_options, "lwf+ewc+replay", "baselines")
    record = run_continual(load_recipe(path)).record
    out = tmp_path / "baselines"
    second = out / "tasks" / "02-presence"
    assert (out / "tasks" / "01-modality" / "ewc.safetensors").is_file() and (second / "ewc.safetensors").is_file()
    rows = train_log(second)
    assert any("loss_ewc" in row for row in rows) and any("loss_lwf" in row for row in rows)
    assert not any("loss_ewc" in row for row in train_log(out / "tasks" / "01-modality"))  # no Fisher yet
    replay = json.loads((second / "replay.json").read_text())
    assert len(replay["buffer"]) == 5 and len(replay["replayed"]) == 6
    first_task, _ = read_source("synthetic", str(synthetic_dir), "train", limit=12,
                                **{"subset": "medical_vqa", "question_types": ["MODALITY"], **synthetic_options})
    assert set(replay["replayed"]) == set(replay["buffer"]) <= {s.id for s in first_task}
    assert record["provenance"]["tasks"][1]["guards"]["replay"] == {"buffer": 5, "replayed": 6}


def test_olora_with_sac_takes_the_lora_path(tmp_path: Path, synthetic_dir: Path, synthetic_options: dict) -> None:
    path = continual_recipe(tmp_path, synthetic_dir, synthetic_options, "o-lora+sac", "olora",
                            peft={"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0})
    run_continual(load_recipe(path))
    out = tmp_path / "olora"
    first, second = out / "tasks" / "01-modality", out / "tasks" / "02-presence"
    assert (first / "train" / "adapter" / "adapter_model.safetensors").is_file()
    consolidation = json.loads((first / "model" / "consolidation.json").read_text())
    lora_tensors = [k for k, v in consolidation["tensors"].items() if v["lora_path"]]
    assert len(lora_tensors) == 2 * 7  # 2 layers × q, k, v, o, gate, up, down
    assert any("loss_olora" in row for row in train_log(second))
    # the CLI-level entry point agrees with the runner: consolidating the adapter directly
    config = ConsolidationConfig(ratio=0.2)
    consolidate_checkpoints("sac", out / "initial" / "model", first / "train" / "adapter", tmp_path / "c", config)
    ours = load_update(out / "initial" / "model", tmp_path / "c").current
    runner = load_update(out / "initial" / "model", first / "model").current
    assert all(torch.allclose(ours[k], runner[k]) for k in ours)


def test_recipes_naming_impossible_methods_fail_before_training(tmp_path: Path, synthetic_dir: Path,
                                                                synthetic_options: dict) -> None:
    with pytest.raises(RecipeError, match="peft.method"):
        run_continual(load_recipe(continual_recipe(tmp_path, synthetic_dir, synthetic_options, "o-lora", "x1")))
    with pytest.raises(MedvlmError, match="did you mean 'replay'"):
        run_continual(load_recipe(continual_recipe(tmp_path, synthetic_dir, synthetic_options, "replya", "x2")))
    with pytest.raises(RecipeError, match="at most one consolidator"):
        load_recipe(continual_recipe(tmp_path, synthetic_dir, synthetic_options, "sac+mix", "x3"))
    assert not (tmp_path / "x1" / "tasks").exists() and not (tmp_path / "x2" / "tasks").exists()
