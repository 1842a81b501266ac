"""Adapter runs: every checkpoint holds adapter + projector; resume and evaluation work from any of them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from medvlm.model.export import load_for_inference
from medvlm.recipe import load_recipe
from medvlm.train.stage import run_stage


def write_recipe(tmp: Path, synthetic_dir: Path, options: dict, name: str, *, peft: dict,
                 model: dict | None = None, **train) -> Path:
    spec = {
        "name": name,
        "model": model or {"preset": "micro-clip-llama"},
        "data": {"train": [{"dataset": "synthetic", "path": str(synthetic_dir), "split": "train", "limit": 16,
                            "options": {"subset": "medical_vqa", **options}}],
                 "max_length": 96, "system_prompt": ""},
        "train": {"stage": "finetune", "learning_rate": 2e-3, "per_device_batch_size": 4, "max_steps": 4,
                  "save_steps": 2, "save_total_limit": 5, "logging_steps": 1, "seed": 5, "tensorboard": False,
                  **train},
        "peft": {"r": 4, "alpha": 8, **peft},
        "output": {"dir": str(tmp / name)},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def logits(model, processor) -> torch.Tensor:
    """Logits of a fixed image + question, through the model's own processor."""
    from PIL import Image

    image = Image.new("RGB", (20, 20), (120, 30, 200))
    inputs = processor(text=["USER: <image>\nIs there a lesion? ASSISTANT:"], images=[image], return_tensors="pt")
    with torch.no_grad():
        return model(**inputs).logits


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, synthetic_dir: Path, synthetic_options: dict):
    tmp = tmp_path_factory.mktemp("lora_run")
    path = write_recipe(tmp, synthetic_dir, synthetic_options, "lora", peft={"method": "lora", "dropout": 0.1})
    return path, run_stage(load_recipe(path))


def test_run_keeps_the_adapter_and_a_merged_model(lora_run) -> None:
    _, result = lora_run
    out = result.output_dir
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "model" / "config.json").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert result.summary["trainable"].keys() == {"projector", "language_model"}


@pytest.mark.parametrize("checkpoint", ["checkpoint-2", "checkpoint-4"])
def test_every_checkpoint_holds_the_adapter_and_the_projector(lora_run, checkpoint: str) -> None:
    _, result = lora_run
    with safe_open(result.output_dir / "checkpoints" / checkpoint / "adapter_model.safetensors", "pt") as f:
        keys = list(f.keys())
    lora = [k for k in keys if ".lora_A." in k or ".lora_B." in k]
    projector = [k for k in keys if "multi_modal_projector" in k]
    assert len(lora) == 2 * 7 * 2  # A and B × 7 linears × 2 layers of micro-clip-llama
    assert sorted(k.rsplit("multi_modal_projector.", 1)[1] for k in projector) == \
        ["linear_1.bias", "linear_1.weight", "linear_2.bias", "linear_2.weight"]
    assert len(keys) == len(lora) + len(projector)  # nothing else: no frozen base weights


def test_evaluation_works_from_any_checkpoint(lora_run) -> None:
    _, result = lora_run
    out = result.output_dir
    final_model, processor = load_for_inference(out / "model")
    from_run = logits(*load_for_inference(out))
    from_last = logits(*load_for_inference(out / "checkpoints" / "checkpoint-4"))
    from_first = logits(*load_for_inference(out / "checkpoints" / "checkpoint-2"))
    final = logits(final_model, processor)
    assert float((from_run - final).abs().max()) < 1e-5
    assert float((from_last - final).abs().max()) < 1e-5  # training ended on step 4
    assert float((from_first - final).abs().max()) > 1e-3  # an earlier state really is different


def test_predict_cli_answers_from_a_checkpoint(lora_run, synthetic_dir: Path, synthetic_options: dict,
                                               tmp_path: Path) -> None:
    import json

    from medvlm.cli import main

    _, result = lora_run
    answers = tmp_path / "answers.jsonl"
    code = main(["predict", "--model", str(result.output_dir / "checkpoints" / "checkpoint-2"),
                 "--dataset", "synthetic", "--path", str(synthetic_dir), "--split", "test", "--limit", "3",
                 "--option", "subset=medical_vqa",
                 *[f"--option={k}={json.dumps(v)}" for k, v in synthetic_options.items()],
                 "--max-new-tokens", "3", "--output", str(answers)])
    assert code == 0
    assert len(answers.read_text().splitlines()) == 3


def test_resume_from_an_adapter_checkpoint_matches_the_uninterrupted_run(lora_run, tmp_path: Path) -> None:
    path, result = lora_run
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(result.output_dir, resumed_dir)
    for leftover in ("model", "adapter", "checkpoints/checkpoint-4"):
        shutil.rmtree(resumed_dir / leftover)
    recipe = load_recipe(path, [f"output.dir={resumed_dir}"])
    run_stage(recipe, resume=True)
    with safe_open(result.output_dir / "adapter" / "adapter_model.safetensors", "pt") as a, \
            safe_open(resumed_dir / "adapter" / "adapter_model.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys())
        worst = max(float((a.get_tensor(k) - b.get_tensor(k)).abs().max()) for k in a.keys())
    assert worst == 0.0, f"resumed adapter differs by up to {worst}"


def test_merge_at_end_false_leaves_an_adapter_model_dir(tmp_path: Path, synthetic_dir: Path,
                                                        synthetic_options: dict) -> None:
    """OUT/model is then the adapter, naming a base directory transformers (with peft) loads it onto."""
    from transformers import LlavaForConditionalGeneration

    from medvlm.model.build import load_pretrained

    path = write_recipe(tmp_path, synthetic_dir, synthetic_options, "nomerge", max_steps=2, save_steps=100,
                        peft={"method": "lora", "merge_at_end": False})
    out = run_stage(load_recipe(path)).output_dir
    assert (out / "model" / "adapter_config.json").is_file() and not (out / "model" / "model.safetensors").exists()
    assert (out / "base" / "model.safetensors").is_file()  # the tiny preset's weights, for the adapter to name
    merged, processor = load_pretrained(out / "model")  # medvlm: base + adapter, merged
    native = LlavaForConditionalGeneration.from_pretrained(out / "model")  # transformers' peft integration
    native.eval()
    reference = logits(*load_for_inference(out))
    assert float((logits(merged, processor) - reference).abs().max()) < 1e-5
    assert float((logits(native, processor) - reference).abs().max()) < 1e-5
