"""The command line: `medvlm consolidate`, and `medvlm pipeline` on a continual recipe."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from medvlm.cli import main
from medvlm.continual import ConsolidationConfig, get_consolidator
from medvlm.continual.checkpoints import load_update
from medvlm.model.tiny import build_tiny


def _save_pair(tmp_path: Path) -> tuple[Path, Path]:
    model, processor = build_tiny("micro-clip-llama", seed=0)
    model.save_pretrained(tmp_path / "previous")
    processor.save_pretrained(tmp_path / "previous")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "language_model" in name or "multi_modal_projector" in name:
                param.add_(torch.randn(param.shape, generator=g) * 0.01)
    model.save_pretrained(tmp_path / "current")
    processor.save_pretrained(tmp_path / "current")
    return tmp_path / "previous", tmp_path / "current"


def test_consolidate_command_writes_a_loadable_model(tmp_path: Path, capsys) -> None:
    previous, current = _save_pair(tmp_path)
    for method, flag in (("sac", "--ratio=0.3"), ("mix", "--alpha=0.25")):
        out = tmp_path / f"out-{method}"
        assert main(["consolidate", "--method", method, "--previous", str(previous), "--current", str(current),
                     flag, "--output", str(out)]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["method"] == method
        update = load_update(previous, current)
        config = ConsolidationConfig(ratio=0.3, alpha=0.25)
        expected = get_consolidator(method)(update.previous, update.current, config)
        written = load_update(previous, out).current
        assert all(torch.allclose(written[k], expected[k], atol=1e-6) for k in expected)
        assert (out / "processor_config.json").is_file() and (out / "consolidation.json").is_file()


def test_consolidate_command_reports_a_missing_model_in_one_line(tmp_path: Path, capsys) -> None:
    code = main(["consolidate", "--method", "sac", "--previous", str(tmp_path / "nope"), "--current",
                 str(tmp_path / "nope"), "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope: model directory not found" in err[0]


def test_pipeline_command_runs_a_continual_recipe(tmp_path: Path, synthetic_dir: Path,
                                                  synthetic_options: dict, capsys) -> None:
    def source(split: str, limit: int, subset: str = "medical_vqa") -> dict:
        return {"dataset": "synthetic", "path": str(synthetic_dir), "split": split, "limit": limit,
                "options": {"subset": subset, **synthetic_options}}

    recipe = {"name": "cli", "model": {"preset": "micro-clip-llama"},
              "data": {"max_length": 128, "system_prompt": ""},
              "train": {"max_steps": 2, "per_device_batch_size": 4, "save_steps": 100, "tensorboard": False},
              "eval": {"batch_size": 8, "max_new_tokens": 3},
              "continual": {"method": "mix", "tasks": [{"name": "vqa", "train": [source("train", 8)],
                                                          "eval": [source("test", 4)]}],
                            "probes": [{"name": "general", "eval": [source("test", 4, "general_vqa")]}]},
              "output": {"dir": str(tmp_path / "run")}}
    path = tmp_path / "continual.yaml"
    path.write_text(yaml.safe_dump(recipe))
    assert main(["pipeline", str(path), "continual.mix.alpha=0.5"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    record = json.loads((tmp_path / "run" / "continual.json").read_text())
    assert record["metrics"] == metrics and record["method"] == "mix"
    assert record["probes"] == ["vqa", "general"] and len(record["accuracy"]) == 2
