"""Training throughput and memory at LLaVA-Med v1.5 scale: QLoRA, bf16 LoRA, bf16 full finetuning.

A random-init model with LLaVA-Med v1.5 shapes (Mistral-7B text config, CLIP ViT-L/14-336 vision
config, mlp2x_gelu projector; ``medvlm.model.plan.llava_med_v15_config``) is trained on synthetic batches
of ``--seq`` tokens (576 of them image tokens) the way a medvlm stage trains it: the same
quantisation config and skip modules, peft's k-bit preparation and medvlm's LoRA setup, gradient
checkpointing without re-entrancy, bf16 autocast, the Trainer's fused AdamW. For each mode:

* ``peak_memory_gib``: ``torch.cuda.max_memory_allocated`` over the timed steps (CPU: every live
  tensor storage, :class:`medvlm.train.memtrack.PeakMemory`), next to ``planned_gib`` from ``medvlm plan``;
* ``tokens_per_second``: batch × seq / median step time;
* ``mfu``: model FLOPs per second / the GPU's peak dense bf16 FLOPs. Model FLOPs count the useful
  work only (no recomputation): forward 2·N per token, backward 2·N for activation gradients plus
  2·N_trained for weight gradients (so 6N for full finetuning, ≈4N for LoRA), causal attention as
  full s² (Megatron's convention), the frozen vision tower forward-only. ``mfu_6n`` is the 6N
  convention many tools report for LoRA too.

A mode the planner says cannot fit is skipped (``status: skipped``), an out-of-memory is recorded.

    python bench/gpu_train.py                         # on a GPU: writes bench/results/gpu_train.json
    python bench/gpu_train.py --tiny --device cpu     # the same code at tiny scale (tests run this)

Targets (issue 6): QLoRA peak ≤ 16 GB; bf16 LoRA MFU ≥ 35 % on an H100.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from medvlm.io import write_json  # noqa: E402
from medvlm.model.adapters import apply_lora  # noqa: E402
from medvlm.model.build import apply_freeze_plan, num_image_tokens  # noqa: E402
from medvlm.model.plan import GIB, llava_med_v15_config, model_shapes, plan_memory  # noqa: E402
from medvlm.model.quant import avoid_cpu_packing_bug, quantization_config, quantized_device_map  # noqa: E402
from medvlm.recipe import Recipe  # noqa: E402
from medvlm.train.memtrack import PeakMemory  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("qlora", "lora", "full")
TRAINABLE = ("projector", "language_model")

# Peak dense bf16 tensor FLOP/s by device name (vendor datasheets, no sparsity).
PEAK_BF16_TFLOPS = {
    "H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0,
    "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
    "RTX 4090": 165.0, "RTX 6000 Ada": 364.0, "GH200": 989.0, "B200": 2250.0,
}


def lookup_peak_tflops(device_name: str) -> float | None:
    """Peak dense bf16 TFLOP/s of a GPU by its name (most specific table entry first)."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key in device_name:
            return PEAK_BF16_TFLOPS[key]
    return None


def peak_tflops(device: torch.device, override: float | None) -> tuple[str, float | None]:
    if device.type != "cuda":
        return platform.processor() or platform.machine(), override
    name = torch.cuda.get_device_name(device)
    return name, override or lookup_peak_tflops(name)


def tiny_config():
    """The same architecture at a size a CPU trains in seconds (16 image tokens)."""
    from transformers import CLIPVisionConfig, LlavaConfig, MistralConfig

    text = MistralConfig(vocab_size=1024, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         sliding_window=None, tie_word_embeddings=False)
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                              image_size=56, patch_size=14, projection_dim=64, hidden_act="quick_gelu")
    return LlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=1000,
                       projector_hidden_act="gelu", vision_feature_layer=-2,
                       vision_feature_select_strategy="default", image_seq_length=16)


def recipe_for(mode: str, args: argparse.Namespace) -> Recipe:
    """The stage recipe this benchmark mode corresponds to (what ``medvlm plan`` is asked about)."""
    return Recipe.model_validate({
        "model": {"preset": "tiny-clip-llama", "dtype": "bfloat16"},  # shapes come from the config below
        "data": {"max_length": args.seq},
        "train": {"stage": "finetune", "per_device_batch_size": args.batch, "bf16": True,
                  "gradient_checkpointing": not args.no_checkpointing},
        "peft": {"method": "none" if mode == "full" else mode, "r": args.lora_r, "alpha": 2 * args.lora_r,
                 "dropout": 0.05},
    })


def build(mode: str, config, recipe: Recipe, device: torch.device, saved_dir: Path):
    """The model as a medvlm stage builds it for ``mode``."""
    from transformers import LlavaForConditionalGeneration

    if mode == "qlora":
        model = LlavaForConditionalGeneration.from_pretrained(
            saved_dir, dtype=torch.bfloat16, device_map=quantized_device_map(),
            quantization_config=quantization_config(recipe.peft, torch.bfloat16))
        avoid_cpu_packing_bug(model)
    else:
        with torch.device(device):
            model = LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    if mode == "full":
        apply_freeze_plan(model, TRAINABLE)
    else:
        apply_freeze_plan(model, ())
        model = apply_lora(model, recipe.peft, TRAINABLE, gradient_checkpointing=recipe.train.gradient_checkpointing)
    if recipe.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    return model.train()


def batch(config, args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image_tokens = num_image_tokens(config)
    ids = torch.randint(3, min(config.text_config.vocab_size, 32000) - 1, (args.batch, args.seq), generator=generator)
    ids[:, 1:1 + image_tokens] = config.image_token_id
    labels = ids.clone()
    labels[:, :1 + image_tokens] = -100
    side = config.vision_config.image_size
    pixels = torch.randn(args.batch, 3, side, side, generator=generator).to(dtype)
    return {k: v.to(device) for k, v in {"input_ids": ids, "labels": labels, "pixel_values": pixels}.items()}


def model_flops_per_step(config, shapes, args: argparse.Namespace, mode: str) -> tuple[float, float]:
    """(useful model FLOPs, 6N-convention FLOPs) of one optimizer step; see the module docstring."""
    text = config.text_config
    lm = shapes.params["language_model"] - text.vocab_size * text.hidden_size  # embeddings do no matmul
    tower, projector = shapes.params["vision_tower"], shapes.params["projector"]
    tokens, image_tokens = args.batch * args.seq, args.batch * num_image_tokens(config)
    attention = 4 * args.seq * text.hidden_size * text.num_hidden_layers * tokens  # QK^T and AV, forward
    weight_grads = lm if mode == "full" else shapes.lora_params
    frozen_parts = 2 * tower * image_tokens + 6 * projector * image_tokens + 3 * attention
    useful = (4 * lm + 2 * weight_grads) * tokens + frozen_parts
    convention = 6 * lm * tokens + frozen_parts
    return float(useful), float(convention)


def measure(mode: str, config, recipe: Recipe, args: argparse.Namespace, device: torch.device,
            saved_dir: Path) -> tuple[int, list[float]]:
    """Peak bytes and step times of ``args.steps`` optimizer steps after ``args.warmup``."""
    model = build(mode, config, recipe, device, saved_dir)
    inputs = batch(config, args, device, torch.float32 if mode == "qlora" else torch.bfloat16)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    times = []
    with PeakMemory(device, model, optimizer) as peak:
        for _ in range(args.steps):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - started)
    return peak.bytes, times


def run_mode(mode: str, config, args: argparse.Namespace, device: torch.device, saved_dir: Path,
             tflops: float | None, gpu_bytes: int | None) -> dict:
    from transformers import LlavaForConditionalGeneration

    recipe = recipe_for(mode, args)
    with torch.device("meta"):
        shapes = model_shapes(LlavaForConditionalGeneration(config), recipe)
    plan = plan_memory(recipe, shapes=shapes, gpus=1)
    row: dict = {"planned_gib": round(plan.total / GIB, 3)}
    if gpu_bytes is not None and plan.needed > gpu_bytes:
        return {**row, "status": "skipped",
                "reason": f"planner: {plan.needed / GIB:.1f} GiB > {gpu_bytes / GIB:.1f} GiB"}
    try:
        peak, times = measure(mode, config, recipe, args, device, saved_dir)
    except torch.OutOfMemoryError as exc:
        return {**row, "status": "oom", "reason": str(exc).splitlines()[0]}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    seconds = statistics.median(times)
    useful, convention = model_flops_per_step(config, shapes, args, mode)
    return row | {
        "status": "ok", "peak_memory_gib": round(peak / GIB, 3), "planned_over_measured": round(plan.total / peak, 3),
        "step_seconds_median": round(seconds, 4), "step_seconds": [round(t, 4) for t in times],
        "tokens_per_second": round(args.batch * args.seq / seconds, 1),
        "trained_parameters": shapes.lora_params + shapes.params["projector"] if mode != "full"
        else shapes.params["language_model"] + shapes.params["projector"],
        "model_flops_per_step": useful,
        "mfu": round(useful / seconds / (tflops * 1e12), 4) if tflops else None,
        "mfu_6n": round(convention / seconds / (tflops * 1e12), 4) if tflops else None}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny model of the same architecture (CPU tests)")
    parser.add_argument("--seq", type=int, help="tokens per sample, image tokens included (default 2048; tiny 96)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--lora-r", type=int, help="default 128 with alpha 256 (LLaVA-1.5 LoRA recipe); tiny: 8")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, help="peak bf16 TFLOP/s when the device is not in the table")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    args.seq = args.seq or (96 if args.tiny else 2048)
    args.lora_r = args.lora_r or (8 if args.tiny else 128)
    device = torch.device(args.device)
    config = tiny_config() if args.tiny else llava_med_v15_config()
    name, tflops = peak_tflops(device, args.peak_tflops)
    gpu_bytes = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else None
    modes = [m for m in args.modes.split(",") if m]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="medvlm-bench-") as tmp:
        if "qlora" in modes:  # bitsandbytes quantises while loading: give it random weights to load
            from transformers import LlavaForConditionalGeneration

            with torch.device(device):
                LlavaForConditionalGeneration._from_config(config, dtype=torch.bfloat16).save_pretrained(tmp)
            if device.type == "cuda":
                torch.cuda.empty_cache()
        results = {mode: run_mode(mode, config, args, device, Path(tmp), tflops, gpu_bytes) for mode in modes}
    report = {
        "benchmark": "gpu_train", "device": name, "peak_bf16_tflops": tflops,
        "gpu_memory_gib": None if gpu_bytes is None else round(gpu_bytes / GIB, 1),
        "model": "tiny (same architecture)" if args.tiny else "LLaVA-Med v1.5 shapes (Mistral-7B + CLIP ViT-L/14-336)",
        "seq": args.seq, "image_tokens": num_image_tokens(config), "batch": args.batch, "lora_r": args.lora_r,
        "gradient_checkpointing": not args.no_checkpointing, "steps": args.steps, "warmup": args.warmup,
        "torch": torch.__version__, "modes": results,
        "targets": {
            "qlora_peak_le_16gb": (results["qlora"]["peak_memory_gib"] * GIB <= 16e9)
            if results.get("qlora", {}).get("status") == "ok" else None,
            "lora_mfu_ge_35pct": (results["lora"]["mfu"] >= 0.35)
            if results.get("lora", {}).get("mfu") is not None else None,
        },
    }
    output = args.output or RESULTS / ("gpu_train_tiny_cpu.json" if args.tiny else "gpu_train.json")
    write_json(output, report)
    print(f"wrote {output}")
    for mode, row in results.items():
        print(mode, {k: v for k, v in row.items() if k != "step_seconds"})
    return report


if __name__ == "__main__":
    main()
