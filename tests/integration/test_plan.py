"""The memory planner: measured peaks of tiny models on the CPU, exact weight counts, 7B verdicts, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from medvlm.cli import main
from medvlm.errors import ModelError
from medvlm.model.build import load_model
from medvlm.model.plan import GIB, plan_memory
from medvlm.model.quant import quantization_config
from medvlm.recipe import Recipe
from medvlm.train.memtrack import measure_training_peak


def recipe(**sections) -> Recipe:
    tree = {"model": {"preset": "tiny-clip-llama"}, "data": {"max_length": 192},
            "train": {"per_device_batch_size": 2, "stage": "finetune"},
            "peft": {"method": "none", "r": 8, "alpha": 16}}
    for name, values in sections.items():
        tree[name] = {**tree.get(name, {}), **values}
    return Recipe.model_validate(tree)


CASES = {
    "full fp32": {},
    "full bf16 + checkpointing": {"model": {"preset": "tiny-clip-llama", "dtype": "bfloat16"},
                                  "train": {"gradient_checkpointing": True}},
    "align (frozen LLM)": {"train": {"stage": "align"}},
    "lora + dropout + checkpointing": {"peft": {"method": "lora", "dropout": 0.05},
                                       "train": {"gradient_checkpointing": True}},
    "qlora nf4": {"peft": {"method": "qlora", "dropout": 0.0}},
    "dora": {"peft": {"method": "dora", "dropout": 0.0}},
    "short sequences (optimizer step peaks)": {"data": {"max_length": 24}, "train": {"per_device_batch_size": 1}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_plan_matches_the_measured_peak_of_tiny_models(case: str) -> None:
    r = recipe(**CASES[case])
    planned, measured = plan_memory(r).total, measure_training_peak(r)
    assert 0.9 <= planned / measured <= 1.1, f"{case}: planned {planned:,} vs measured {measured:,} bytes"


def test_weights_are_counted_exactly() -> None:
    model, _ = load_model(recipe().model)
    exact = sum(p.numel() * p.element_size() for p in model.parameters())
    assert plan_memory(recipe()).terms["weights"] == exact
    quantised, _ = load_model(recipe().model, quantization=quantization_config(recipe(peft={"method": "qlora"}).peft,
                                                                               torch.float32))
    stored = sum(p.untyped_storage().nbytes() for p in quantised.parameters())
    from medvlm.model.quant import (
        prepare_for_kbit_training,  # float32 copies count too (already float32 here)
    )

    prepare_for_kbit_training(quantised, False)
    state_bytes = sum(t.numel() * t.element_size() for m in quantised.modules()
                      if (q := getattr(getattr(m, "weight", None), "quant_state", None)) is not None
                      for t in (q.absmax, *((q.state2.absmax,) if q.nested else ())))
    planned = plan_memory(recipe(peft={"method": "qlora", "r": 8}))
    lora_and_copy = planned.terms["weights"] - (stored + state_bytes)
    assert 0 < lora_and_copy < 0.25 * planned.terms["weights"]  # only adapters + projector copy on top


def test_llava_med_7b_verdicts() -> None:
    """LLaVA-Med v1.5 shapes, 2048 tokens: QLoRA fits a 24 GB card; bf16 full finetuning needs sharding."""
    base = {"data": {"max_length": 2048}, "model": {"preset": "tiny-clip-llama", "dtype": "bfloat16"},
            "train": {"per_device_batch_size": 1, "gradient_checkpointing": True, "bf16": True}}
    qlora = plan_memory(recipe(**base, peft={"method": "qlora", "r": 128, "alpha": 256}), gpu_memory_gb=24,
                        reference="llava-med-v1.5-7b")
    assert qlora.fits and qlora.total < 16 * GIB
    full = plan_memory(recipe(**base), gpu_memory_gb=48, reference="llava-med-v1.5-7b")
    layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096  # attention (GQA 8 kv), MLP, norms
    mistral = 32 * layer + 2 * 32064 * 4096 + 4096  # + embeddings, lm_head, final norm
    projector = 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    clip_l_336 = 303_507_456
    assert full.terms["weights"] == 2 * (mistral + projector + clip_l_336)
    assert full.terms["optimizer states"] == 4 * (mistral + projector)  # two bf16 moments, tower frozen
    assert not full.fits and any("zero3" in note for note in full.notes)
    zero3 = Path(__file__).resolve().parents[2] / "recipes" / "deepspeed" / "zero3.json"
    sharded = plan_memory(recipe(**{**base, "train": {**base["train"], "deepspeed": str(zero3)}}), gpus=8,
                          gpu_memory_gb=80, reference="llava-med-v1.5-7b")
    assert sharded.fits and sharded.total < full.total / 3
    assert plan_memory(recipe(**base), gpu_memory_gb=80, reference="llava-med-v1.5-7b").fits  # pure bf16 AdamW


def test_plan_cli(tmp_path: Path, capsys) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"model": {"preset": "micro-clip-llama"}, "data": {"max_length": 64},
                                    "peft": {"method": "lora"}}))
    assert main(["plan", str(path), "--gpu-memory", "24"]) == 0
    assert "fits a 24 GiB GPU" in capsys.readouterr().out
    assert main(["plan", str(path), "train.per_device_batch_size=4", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tokens_per_micro_batch"] == 256 and report["fits"] is None
    ds = tmp_path / "z3.json"
    ds.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    assert main(["plan", str(path), "peft.method=qlora", f"train.deepspeed={ds}"]) == 2
    assert "ZeRO-3" in capsys.readouterr().err
    with pytest.raises(ModelError, match="unknown reference"):
        plan_memory(recipe(), reference="gpt-5")
    missing = recipe(model={"preset": None, "path": str(tmp_path / "not-downloaded")})
    with pytest.raises(ModelError, match="not-downloaded: model directory not found; .* --shapes llava-med-v1.5-7b"):
        plan_memory(missing)


@pytest.mark.parametrize("name", ["vqa_rad.yaml", "instruct.yaml"])
def test_shipped_qlora_recipes_fit_a_24gb_gpu(name: str, monkeypatch) -> None:
    from medvlm.recipe import load_recipe
    from tests.conftest import REPO

    for variable in ("MEDVLM_BASE_MODEL", "LLAVA_MED_DATA", "VQA_RAD_DIR", "MEDVLM_RUNS"):
        monkeypatch.setenv(variable, "/nonexistent")
    r = load_recipe(REPO / "recipes" / "qlora" / name)
    assert r.peft.method == "qlora" and r.train.deepspeed is None and r.train.gradient_checkpointing
    plan = plan_memory(r, gpu_memory_gb=24, reference="llava-med-v1.5-7b")
    assert plan.fits and plan.total < 16e9


def test_qlora_demo_recipe_plans_on_its_tiny_preset() -> None:
    from medvlm.recipe import load_recipe
    from tests.conftest import REPO

    r = load_recipe(REPO / "recipes" / "qlora" / "demo.yaml")
    assert r.model.preset == "tiny-clip-llama" and r.peft.method == "qlora"
    assert plan_memory(r, gpu_memory_gb=1).fits
