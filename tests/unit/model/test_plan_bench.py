"""bench/gpu_train.py at tiny scale on the CPU: the code a GPU run executes, end to end."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.conftest import REPO


def load_bench():
    spec = importlib.util.spec_from_file_location("gpu_train", REPO / "bench" / "gpu_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_run_measures_every_mode(tmp_path: Path) -> None:
    bench = load_bench()
    output = tmp_path / "gpu_train.json"
    report = bench.main(["--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--peak-tflops", "0.5",
                         "--output", str(output)])
    assert json.loads(output.read_text()) == report
    assert report["seq"] == 96 and report["image_tokens"] == 16 and report["peak_bf16_tflops"] == 0.5
    for mode in ("qlora", "lora", "full"):
        row = report["modes"][mode]
        assert row["status"] == "ok", row
        assert row["peak_memory_gib"] > 0 and len(row["step_seconds"]) == 2 and row["tokens_per_second"] > 0
        assert 0.8 <= row["planned_over_measured"] <= 1.25, (mode, row)
        expected_mfu = row["model_flops_per_step"] / row["step_seconds_median"] / 0.5e12
        assert row["mfu"] == pytest.approx(expected_mfu, rel=0.02, abs=1e-4)
    # LoRA does no weight-gradient work on the frozen base: fewer useful FLOPs than full finetuning
    assert report["modes"]["lora"]["model_flops_per_step"] < report["modes"]["full"]["model_flops_per_step"]
    assert report["modes"]["qlora"]["trained_parameters"] == report["modes"]["lora"]["trained_parameters"]
    assert set(report["targets"]) == {"qlora_peak_le_16gb", "lora_mfu_ge_35pct"}


def test_flops_and_peak_tables() -> None:
    bench = load_bench()
    assert bench.lookup_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.lookup_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.lookup_peak_tflops("NVIDIA H200") == 989.0
    assert bench.lookup_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert bench.lookup_peak_tflops("Some New GPU") is None
    # LLaVA-Med v1.5 at 2048 tokens: 6N per token with N = the LLM's matmul weights (~7.1e9)
    import argparse

    import torch
    from transformers import LlavaForConditionalGeneration

    from medvlm.model.plan import llava_med_v15_config, model_shapes

    config = llava_med_v15_config()
    args = argparse.Namespace(batch=1, seq=2048)
    with torch.device("meta"):
        shapes = model_shapes(LlavaForConditionalGeneration(config), bench.recipe_for("lora", argparse.Namespace(
            seq=2048, batch=1, no_checkpointing=False, lora_r=128)))
    useful, convention = bench.model_flops_per_step(config, shapes, args, "full")
    lm = 7_242_256_384 - 32064 * 4096
    attention = 3 * 4 * 2048 * 4096 * 32 * 2048
    frozen = 2 * 303_507_456 * 576 + 6 * 20_979_712 * 576
    assert useful == convention == 6 * lm * 2048 + attention + frozen
    lora_useful, _ = bench.model_flops_per_step(config, shapes, args, "lora")
    assert lora_useful == (4 * lm + 2 * shapes.lora_params) * 2048 + attention + frozen
