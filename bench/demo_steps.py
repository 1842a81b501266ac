"""How many steps the demo's medical stages need: accuracy on a validation set against CPU time.

The demo must finish in five minutes on two idle cores and still clear its targets (strict closed
accuracy ≥ 90 %, open exact match ≥ 80 % on the synthetic medical VQA test set). Choosing the step
counts on that test set would overfit the choice to it, so each candidate is scored on a validation
set instead: the same generator with another seed (``SyntheticSpec(seed=1)``), images and questions
the demo never sees. Candidates share their prefixes (one align run feeds every instruct length, one
instruct run every finetune length), all from the shipped general base, on one thread as the demo runs.
When finetuning learns the closed questions depends on the training noise, so a step count is judged
over several data orders (``--seeds``) and kernel sets: run the bench again with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` on an AVX-512 machine to see what an AVX2 machine
computes (each row records the kernels it ran).

    python bench/demo_steps.py --align 75 --instruct 100 --finetune 1000 1300 --seeds 42 1 2 [--workdir DIR]

Writes bench/results/demo_steps.json (appending to the candidates already there).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from validation import VALIDATION_DIR, VALIDATION_SEED  # noqa: E402

from medvlm.eval.run import evaluate_model  # noqa: E402
from medvlm.io import write_json  # noqa: E402
from medvlm.recipe import EvalSpec, SourceSpec, load_recipe  # noqa: E402
from medvlm.resources import general_base, recipes_dir  # noqa: E402
from medvlm.runs.general_base import cpu_kind  # noqa: E402
from medvlm.runs.threads import cpu_threads  # noqa: E402
from medvlm.train.stage import run_stage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "demo_steps.json"


def train(stage: str, start: Path, steps: int, out: Path, data_root: Path, batch: int | None = None,
          lr: float | None = None, seed: int | None = None) -> tuple[Path, float]:
    """One demo stage (its shipped recipe; ``steps`` steps, ``batch``, ``lr`` and data-order ``seed`` if
    given) from ``start``; reuses a finished run."""
    if (out / "model").is_dir():
        return out / "model", json.loads((out / "train_summary.json").read_text())["wall_seconds"]
    overrides = [f"model.path={start}", "model.preset=null", f"train.max_steps={steps}", f"output.dir={out}"]
    if batch:
        overrides.append(f"train.per_device_batch_size={batch}")
    if lr:
        overrides.append(f"train.learning_rate={lr}")
    if seed is not None:
        overrides.append(f"train.seed={seed}")
    recipe = load_recipe(recipes_dir() / "demo" / f"{stage}.yaml", overrides, {"output_dir": str(data_root)})
    result = run_stage(recipe)
    return result.model_dir, result.summary["wall_seconds"]


def validate(model: Path, out: Path, data_root: Path) -> dict:
    spec = EvalSpec(batch_size=64, max_new_tokens=12, datasets=[
        SourceSpec(dataset="synthetic", path=str(data_root / VALIDATION_DIR), split="test",
                   options={"subset": "medical_vqa", "seed": VALIDATION_SEED})])
    scores = next(iter(evaluate_model(model, spec, out, template="vicuna_v1", system_prompt="",
                                      image_aspect_ratio="pad").values()))
    strict = scores["metrics"]["strict"]
    return {"n": scores["n"], "closed_accuracy": strict["closed_accuracy"],
            "open_exact_match": strict["open_exact_match"]}


def candidate_key(row: dict) -> tuple:
    """What identifies a candidate run (rows written before seeds and CPU kinds were recorded: the
    recipe's seed on an AVX512 machine; before vendors were recorded: an Intel machine)."""
    return (row["align"], row["instruct"], row["finetune"], row.get("finetune_batch"), row.get("finetune_lr"),
            row.get("finetune_seed"), row.get("cpu_capability", "AVX512"), row.get("cpu_kind"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--align", type=int, nargs="+", required=True)
    parser.add_argument("--instruct", type=int, nargs="+", required=True)
    parser.add_argument("--finetune", type=int, nargs="+", required=True)
    parser.add_argument("--finetune-batch", type=int, help="finetune batch size (default: the recipe's)")
    parser.add_argument("--finetune-lr", type=float, help="finetune learning rate (default: the recipe's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[None],
                        help="finetune seeds (data order), one run each (default: the recipe's)")
    parser.add_argument("--workdir", help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    results = json.loads(Path(args.output).read_text()) if Path(args.output).is_file() else {"candidates": []}
    base = general_base()
    with tempfile.TemporaryDirectory() as scratch, cpu_threads():
        root = Path(args.workdir or scratch)
        for align in args.align:
            align_model, align_s = train("align", base, align, root / f"a{align}", root)
            for instruct in args.instruct:
                instruct_model, instruct_s = train("instruct", align_model, instruct,
                                                   root / f"a{align}-i{instruct}", root)
                for finetune, seed in itertools.product(args.finetune, args.seeds):
                    batch, lr = args.finetune_batch, args.finetune_lr
                    name = f"a{align}-i{instruct}-f{finetune}-b{batch}-lr{lr}-s{seed}"
                    started = time.perf_counter()
                    model, finetune_s = train("finetune", instruct_model, finetune, root / name, root, batch, lr,
                                              seed)
                    # torch's kernels for this CPU (AVX2, AVX512, ...) set the order of floating-point sums,
                    # so the same run on another kind of CPU is another draw of the training noise
                    row = {"align": align, "instruct": instruct, "finetune": finetune, "finetune_batch": batch,
                           "finetune_lr": lr, "finetune_seed": seed,
                           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_kind": cpu_kind(),
                           "train_seconds": {"align": align_s, "instruct": instruct_s, "finetune": finetune_s},
                           "validation": validate(model, root / name / "eval", root),
                           "load_average": round(os.getloadavg()[0], 2),
                           "seconds": round(time.perf_counter() - started, 1)}
                    print(json.dumps(row), flush=True)
                    results = json.loads(Path(args.output).read_text()) if Path(args.output).is_file() else results
                    results["candidates"] = [c for c in results["candidates"] if candidate_key(c) != candidate_key(row)]
                    results["candidates"].append(row)
                    results["validation_set"] = (f"synthetic medical_vqa test split generated with seed "
                                                 f"{VALIDATION_SEED} (the demo evaluates seed 0)")
                    write_json(args.output, results)


if __name__ == "__main__":
    main()
