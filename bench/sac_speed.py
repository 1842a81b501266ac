"""SAC consolidation speed on a 7B-shaped set of LoRA deltas, and UIR's training overhead.

1. **SAC, LoRA path vs full SVD.** A LLaMA-7B-shaped adapter: 32 layers × (q, k, v, o at 4096×4096;
   gate, up at 14336×4096; down at 4096×14336), rank 128, random factors (fp32). On a sample of
   matrices (one of each shape) SAC runs both ways — the exact LoRA path (thin QR of B and Aᵀ, a
   128×128 SVD, Δ̃ materialised) and the full SVD of the dense Δ — giving the speed-up and the
   largest error of the LoRA path relative to the full path. Then the whole model goes through the
   LoRA path, timed twice: factors only (B̃, Ã: what an adapter-level consumer needs) and with every
   dense Δ̃ = B̃·Ã materialised (what writing θ_t costs). Target: whole model ≤ 2 minutes.
2. **UIR overhead.** medvlm's Trainer loss path on the tiny model, on the same batch mix — synthetic
   medical VQA image batches plus text-only batches (general questions, 25 % of the samples) — once
   with plain cross-entropy on everything (the text samples keep their answers) and once with UIR
   (the text samples are unlabeled inquiries, scored by the hidden-state MSE against a frozen
   teacher). The two sides alternate step by step on the same batches, so a shared machine's load
   swings hit both alike; the ratio of their total step times is reported. Target: ≤ 1.4×.

    python bench/sac_speed.py [--layers 32] [--uir-steps 60] [--repeats 3]

Writes bench/results/sac_speed.json. Timings on a shared machine are noisy: re-run on a quiet one.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from machine import machine  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from medvlm.continual.sac import consolidate_delta, consolidate_lora_delta, consolidate_low_rank  # noqa: E402
from medvlm.continual.uir import UIRLoss, to_inquiry  # noqa: E402
from medvlm.data.collate import (  # noqa: E402
    Collator,
    ConversationEncoder,
    ModalityLengthGroupedSampler,
    SupervisedDataset,
)
from medvlm.data.images import ImagePreparer, PixelCache  # noqa: E402
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample, Turn  # noqa: E402
from medvlm.data.sources import read_source  # noqa: E402
from medvlm.data.synthetic import SyntheticSpec, materialise  # noqa: E402
from medvlm.data.templates import get_template  # noqa: E402
from medvlm.io import write_json  # noqa: E402
from medvlm.model.build import apply_freeze_plan, num_image_tokens  # noqa: E402
from medvlm.model.tiny import build_tiny  # noqa: E402
from medvlm.train.trainer import MedvlmTrainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
HIDDEN, INTERMEDIATE, RANK = 4096, 14336, 128
# (name, out_features m, in_features n): weight shapes of one LLaMA-7B-style decoder layer
LAYER = [("q_proj", HIDDEN, HIDDEN), ("k_proj", HIDDEN, HIDDEN), ("v_proj", HIDDEN, HIDDEN),
         ("o_proj", HIDDEN, HIDDEN), ("gate_proj", INTERMEDIATE, HIDDEN), ("up_proj", INTERMEDIATE, HIDDEN),
         ("down_proj", HIDDEN, INTERMEDIATE)]
RATIO = 0.2


def lora_factors(m: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, RANK, generator=g) * 0.01, torch.randn(RANK, n, generator=g) / n**0.5


def timed(function, *args):
    started = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - started, value


def sample_comparison(repeats: int) -> list[dict]:
    """LoRA path vs full SVD on one matrix of each shape."""
    rows = []
    for index, (name, m, n) in enumerate([LAYER[0], LAYER[4], LAYER[6]]):
        b, a = lora_factors(m, n, seed=index)
        lora_times = []
        for _ in range(repeats):
            seconds, (fast, outcome) = timed(consolidate_lora_delta, b, a, 1.0, RATIO)
            lora_times.append(seconds)
        dense = b @ a
        full_seconds, full = timed(consolidate_delta, dense, RATIO)  # one run: it is the slow side
        error = float((fast - full).abs().max() / full.abs().max())
        rows.append({"matrix": name, "shape": [m, n], "rank": RANK, "window_K": outcome.window,
                     "lora_path_seconds": round(statistics.median(lora_times), 4),
                     "full_svd_seconds": round(full_seconds, 3),
                     "speedup": round(full_seconds / statistics.median(lora_times), 1),
                     "max_abs_error_relative_to_max_entry": error,
                     "frobenius_relative_error": float((fast - full).norm() / full.norm())})
        print(f"  {name} {m}x{n}: LoRA path {rows[-1]['lora_path_seconds']:.3f} s, full SVD "
              f"{full_seconds:.1f} s, speed-up {rows[-1]['speedup']}x, max rel. error {error:.2e}",
              flush=True)
        del dense, full, fast
    return rows


def whole_model(layers: int) -> dict:
    """Every LoRA delta of the model through the LoRA path: factors only, and with Δ̃ materialised."""
    factor_seconds = dense_seconds = 0.0
    buffers = {(m, n): torch.empty(m, n) for _, m, n in LAYER}
    for layer in range(layers):
        for index, (_, m, n) in enumerate(LAYER):
            b, a = lora_factors(m, n, seed=1000 + layer * 10 + index)  # generation is not timed
            started = time.perf_counter()
            new_b, new_a, _ = consolidate_low_rank(b, a, 1.0, RATIO)
            middle = time.perf_counter()
            torch.matmul(new_b, new_a, out=buffers[(m, n)])
            finished = time.perf_counter()
            factor_seconds += middle - started
            dense_seconds += finished - started
    return {"layers": layers, "matrices": layers * len(LAYER),
            "factors_only_seconds": round(factor_seconds, 2),
            "with_dense_delta_seconds": round(dense_seconds, 2), "target_seconds": 120}


# -- UIR overhead -------------------------------------------------------------------------------------

SPEC = SyntheticSpec(general_images={"train": 200, "test": 10}, medical_images={"train": 300, "test": 10})


def text_sample(sample: Sample) -> Sample:
    """A general VQA item without its image: question and answer as a text-only conversation."""
    question = sample.turns[0].text.replace(IMAGE_PLACEHOLDER, "").strip()
    return Sample(id=f"{sample.id}-text", turns=[Turn("user", question), sample.turns[1]], meta=sample.meta)


def uir_datasets(data_dir: Path, processor, model) -> tuple[SupervisedDataset, SupervisedDataset]:
    options = {"general_images": SPEC.general_images, "medical_images": SPEC.medical_images}
    images, _ = read_source("synthetic", str(data_dir), "train", subset="medical_vqa", **options)
    general, _ = read_source("synthetic", str(data_dir), "train", subset="general_vqa", **options)
    general = general[: len(images) // 3]  # text samples are 25 % of the mix
    encoder = ConversationEncoder(processor.tokenizer, get_template("vicuna_v1"),
                                  num_image_tokens(model.config), 256, system_prompt="")
    preparer, cache = ImagePreparer(processor.image_processor, "pad"), PixelCache(1 << 30)
    supervised = SupervisedDataset(images + [text_sample(s) for s in general], encoder, preparer, cache)
    unlabeled = [to_inquiry(s, True, None) for s in general]
    inquiries = SupervisedDataset(images + unlabeled, encoder, preparer, cache)
    for index in range(len(supervised)):  # warm the pixel cache so neither side pays image decoding
        supervised[index]
    return supervised, inquiries


class Side:
    """One training setup (model, optimizer, medvlm's Trainer for its loss path) stepped by hand, so the
    two sides can alternate step by step and share whatever the machine's load does at that moment."""

    def __init__(self, dataset, processor, uir: bool, workdir: Path) -> None:
        self.model, _ = build_tiny("tiny-clip-llama", seed=0)
        apply_freeze_plan(self.model, ("projector", "language_model"))
        self.model.train()
        self.dataset = dataset
        self.collate = Collator(processor.tokenizer.pad_token_id)
        plugins = [UIRLoss(copy.deepcopy(self.model), weight=1.0)] if uir else []
        args = TrainingArguments(output_dir=str(workdir), report_to="none", remove_unused_columns=False,
                                 disable_tqdm=True, use_cpu=True)
        self.trainer = MedvlmTrainer(model=self.model, args=args, loss_plugins=plugins,
                                     data_collator=self.collate, processing_class=processor)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=5e-4)

    def step(self, indices: list[int]) -> float:
        batch = self.collate([self.dataset[i] for i in indices])  # pixels are cached: not timed twice
        started = time.perf_counter()
        loss = self.trainer.compute_loss(self.model, batch)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started


def uir_overhead(steps: int, repeats: int, batch_size: int) -> dict:
    """Seconds per optimizer step, CE-only vs UIR, alternating step by step on the same batches."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = materialise(Path(tmp) / "synthetic", SPEC)
        model, processor = build_tiny("tiny-clip-llama", seed=0)
        supervised, inquiries = uir_datasets(data_dir, processor, model)
        assert len(supervised) == len(inquiries)  # index i is the same item on both sides
        sampler = ModalityLengthGroupedSampler(supervised.lengths, supervised.has_image, batch_size, seed=0)
        order = sampler.batches()
        ce_side = Side(supervised, processor, uir=False, workdir=Path(tmp) / "ce")
        uir_side = Side(inquiries, processor, uir=True, workdir=Path(tmp) / "uir")
        ce, uir, kinds = [], [], []
        for index, batch in enumerate(order[: steps * repeats]):
            # alternate which side goes first, so neither always runs on a warmer cache
            first, second = (ce_side, uir_side) if index % 2 == 0 else (uir_side, ce_side)
            times = {id(first): first.step(batch), id(second): second.step(batch)}
            ce.append(times[id(ce_side)])
            uir.append(times[id(uir_side)])
            kinds.append("text" if not supervised.has_image[batch[0]] else "image")
        warm = max(1, len(ce) // 10)  # the first steps pay allocation and thread start-up
        ce, uir, kinds = ce[warm:], uir[warm:], kinds[warm:]
        text_share = sum(not flag for flag in supervised.has_image) / len(supervised)

    def per_kind(values: list[float], kind: str) -> float:
        chosen = [v for v, k in zip(values, kinds, strict=True) if k == kind]
        return round(statistics.median(chosen), 4) if chosen else None

    pair_ratios = [u / c for u, c in zip(uir, ce, strict=True)]
    return {"model": "tiny-clip-llama (projector + language model trainable)", "batch_size": batch_size,
            "paired_steps": len(ce), "warmup_steps_dropped": warm, "samples": len(supervised),
            "text_sample_share": round(text_share, 3), "text_batches": kinds.count("text"),
            "ce_only_seconds_total": round(sum(ce), 3), "uir_seconds_total": round(sum(uir), 3),
            "ce_only_median_seconds": {"image_batch": per_kind(ce, "image"),
                                       "text_batch": per_kind(ce, "text")},
            "uir_median_seconds": {"image_batch": per_kind(uir, "image"),
                                   "text_batch": per_kind(uir, "text")},
            "ratio_uir_over_ce": round(sum(uir) / sum(ce), 4),
            "median_paired_step_ratio": round(statistics.median(pair_ratios), 4), "target_ratio": 1.4,
            "method": "both sides step by hand through MedvlmTrainer.compute_loss + backward + AdamW, "
                      "alternating on the same batch sequence (CE-only: text samples keep their answers; "
                      "UIR: they are unlabeled inquiries vs a frozen teacher)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--uir-steps", type=int, default=60, help="paired steps per repeat")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-uir", action="store_true")
    args = parser.parse_args()
    print("SAC: LoRA path vs full SVD on sample matrices", flush=True)
    samples = sample_comparison(args.repeats)
    print("SAC: whole model through the LoRA path", flush=True)
    model = whole_model(args.layers)
    print(f"  {model['matrices']} matrices: {model['factors_only_seconds']} s (factors), "
          f"{model['with_dense_delta_seconds']} s (with dense Δ̃)", flush=True)
    result = {
        "benchmark": "sac_speed",
        "machine": machine(),
        "sac": {"ratio": RATIO, "rank": RANK, "dtype": "float32", "samples": samples, "whole_model": model,
                "max_sample_error": max(row["max_abs_error_relative_to_max_entry"] for row in samples),
                "min_speedup": min(row["speedup"] for row in samples)},
    }
    if not args.skip_uir:
        print("UIR overhead vs CE-only at the same batch mix", flush=True)
        result["uir"] = uir_overhead(args.uir_steps, args.repeats, args.batch_size)
        print(f"  ratio {result['uir']['ratio_uir_over_ce']} (target <= 1.4)", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / "sac_speed.json", result)


if __name__ == "__main__":
    main()
