"""How close ``medvlm plan`` comes to the memory training really allocates (tiny models, CPU).

For a grid of recipes — full finetuning, stage-1 alignment (frozen LLM), LoRA with and without
dropout, DoRA, QLoRA 4-bit and 8-bit, each with and without gradient checkpointing, float32 and
bfloat16 — the planner's estimate is compared with the measured peak of two real AdamW steps
(:func:`medvlm.train.memtrack.measure_training_peak`: every live tensor storage, the CPU counterpart of
``torch.cuda.max_memory_allocated``). Memory counts are deterministic, so one run suffices.

    python bench/plan_accuracy.py [--max-length 192] [--batch 2]

Writes bench/results/plan_accuracy.json (ratios planned / measured; 1.0 is exact).
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from medvlm.io import write_json  # noqa: E402
from medvlm.model.plan import plan_memory  # noqa: E402
from medvlm.recipe import Recipe  # noqa: E402
from medvlm.train.memtrack import measure_training_peak  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GRID = {
    "full": {},
    "align (frozen LLM)": {"train": {"stage": "align"}},
    "lora": {"peft": {"method": "lora", "dropout": 0.0}},
    "lora + dropout": {"peft": {"method": "lora", "dropout": 0.05}},
    "dora": {"peft": {"method": "dora", "dropout": 0.0}},
    "qlora nf4": {"peft": {"method": "qlora", "dropout": 0.05}},
    "qlora int8": {"peft": {"method": "qlora", "bits": 8, "dropout": 0.05}},
}


def recipe(variant: dict, dtype: str, checkpointing: bool, args: argparse.Namespace) -> Recipe:
    tree = {"model": {"preset": "tiny-clip-llama", "dtype": dtype}, "data": {"max_length": args.max_length},
            "train": {"stage": "finetune", "per_device_batch_size": args.batch,
                      "gradient_checkpointing": checkpointing},
            "peft": {"method": "none", "r": 8, "alpha": 16}}
    for section, values in variant.items():
        tree[section] = {**tree[section], **values}
    return Recipe.model_validate(tree)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-length", type=int, default=192)
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for name, variant in GRID.items():
        dtypes = ("float32",) if "qlora" in name else ("float32", "bfloat16")  # QLoRA trains in float32 here
        for dtype in dtypes:
            for checkpointing in (False, True):
                r = recipe(variant, dtype, checkpointing, args)
                planned, measured = plan_memory(r).total, measure_training_peak(r)
                rows.append({"recipe": name, "dtype": dtype, "gradient_checkpointing": checkpointing,
                             "planned_bytes": planned, "measured_bytes": measured,
                             "ratio": round(planned / measured, 3)})
                print(f"{name:<20} {dtype:<9} gc={checkpointing!s:<5} planned/measured {planned / measured:.3f}")
    ratios = [row["ratio"] for row in rows]
    write_json(RESULTS / "plan_accuracy.json", {
        "benchmark": "plan_accuracy", "device": "cpu", "model": "tiny-clip-llama",
        "max_length": args.max_length, "batch": args.batch, "rows": rows,
        "summary": {"median_ratio": statistics.median(ratios), "min_ratio": min(ratios), "max_ratio": max(ratios),
                    "within_10_percent": sum(0.9 <= r <= 1.1 for r in ratios), "cases": len(ratios)},
    })
    print(f"wrote {RESULTS / 'plan_accuracy.json'}")


if __name__ == "__main__":
    main()
