"""Forgetting on CPU: every continual method on the same three-task medical sequence, several seeds.

From the tiny general base LLaVA (``recipes/continual/general_base.yaml``, built once and reused),
``recipes/demo/continual.yaml`` trains modality → presence → location questions of the synthetic
medical VQA and re-evaluates every task probe and the general probe after each task. Each
(method, seed) run is a normal continual run under ``--work-dir``; a run whose ``continual.json``
exists is skipped, so the benchmark resumes after an interruption (an interrupted run continues
from its last complete task). The initial model's evaluation (row 0) is identical for every run and
is computed once and shared.

Reported per method: mean ± sample std over seeds of Last, BWT and general retention (and Avg, FWT,
Forgetting, and the learning accuracy mean_t a_{t,t} — plasticity), the mean accuracy matrix, and
the comparison sac+uir vs seq-ft: paired per-seed differences with a one-sided 95 % t lower bound
("beyond seed noise" when the BWT gain's bound is above 0), and whether Last stays within 5 points.
With ``--reference`` (an earlier results file), every guarded method of this invocation is also
compared, paired by seed, with that file's seq-ft against the toy targets (Last above seq-ft beyond
seed noise, BWT >= -10, general retention >= 0.9).

    python bench/continual_forgetting.py [--seeds 0 1 2] [--methods seq-ft sac ...] [--work-dir DIR]
        [--threads N] [--reference FILE] [--probes test|validation] [override KEY=VALUE ...]

``--probes validation`` answers every task probe and the general probe on the validation twin of
the synthetic test sets (``bench/validation.py``): the way to choose between configurations (a
floor, a guard) before reading the test sets with the chosen one.

Writes bench/results/continual_forgetting.json (and a .png of the matrices and the comparison).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from machine import machine  # noqa: E402
from validation import as_validation, materialise_validation  # noqa: E402

from medvlm.claims import claim  # noqa: E402
from medvlm.eval.plots import plot_continual_methods  # noqa: E402
from medvlm.io import read_json, write_json  # noqa: E402
from medvlm.provenance import provenance  # noqa: E402
from medvlm.recipe import load_recipe  # noqa: E402
from medvlm.runs.continual import run_continual  # noqa: E402
from medvlm.runs.pipeline import load_pipeline, run_pipeline  # noqa: E402
from medvlm.train.outputs import claim_output_dir  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ["seq-ft", "mix", "sac", "uir", "sac+uir", "lwf", "ewc", "replay"]
SUMMARY_KEYS = ["last", "bwt", "general_retention", "avg", "fwt", "forgetting"]
log = logging.getLogger("medvlm")


def ensure_base(base_dir: Path) -> Path:
    """Build the general base once (completed stages are skipped on later calls)."""
    pipeline = load_pipeline(REPO / "recipes" / "continual" / "general_base.yaml", [f"output.dir={base_dir}"])
    run_pipeline(pipeline)
    return base_dir / "base" / "model"


def run_dir(work: Path, method: str, seed: int) -> Path:
    return work / method.replace("+", "_") / f"seed{seed}"


def run_one(recipe_path: Path, work: Path, base_dir: Path, method: str, seed: int,
            overrides: list[str], probes: str = "test") -> dict:
    out = run_dir(work, method, seed)
    shared_initial = work / "_initial_eval"
    recipe = load_recipe(recipe_path, [f"continual.method={method}", f"train.seed={seed}",
                                       f"output.dir={out}", f"model.path={base_dir / 'base' / 'model'}",
                                       *overrides])
    for spec in [s for t in recipe.continual.tasks for s in (*t.train, *t.eval)] + \
            [s for p in recipe.continual.probes for s in p.eval] + list(recipe.continual.uir.inquiries) + \
            list(recipe.continual.sac.auto.general):
        if spec.dataset == "synthetic":  # the recipes' outputs/continual_base/... lives under --base-dir
            spec.path = str(base_dir / Path(spec.path or "synthetic").name)
    if probes == "validation":  # choosing a configuration: every probe on the validation twin
        for spec in [s for t in recipe.continual.tasks for s in t.eval] + \
                [s for p in recipe.continual.probes for s in p.eval]:
            as_validation(spec, base_dir)
    materialise_validation(base_dir)  # generated once, before any reader (a recipe may draw on it too)
    if shared_initial.is_dir() and not (out / "eval" / "initial").exists():
        with claim(out):  # the run's directory first, so the copied answers are not someone else's files
            claim_output_dir(out, recipe, "continual run")
            shutil.copytree(shared_initial, out / "eval" / "initial")  # same model, same probes: answers reused
    record = run_continual(recipe, resume=True).record
    if not shared_initial.exists():
        shutil.copytree(out / "eval" / "initial", shared_initial)
    return record


def mean_std(values: list[float | None]) -> dict:
    present = [v for v in values if v is not None]
    if not present:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return {"mean": round(statistics.mean(present), 4), "std": round(std, 4), "n": len(present)}


def paired(ours: dict[int, dict], theirs: dict[int, dict], key: str) -> dict:
    """Per-seed differences ours − theirs, their mean, std and one-sided 95 % t lower bound."""
    from scipy.stats import t

    seeds = sorted(set(ours) & set(theirs))
    diffs = [ours[s]["metrics"][key] - theirs[s]["metrics"][key] for s in seeds
             if ours[s]["metrics"][key] is not None and theirs[s]["metrics"][key] is not None]
    if len(diffs) < 2:
        return {"seeds": seeds, "differences": diffs, "mean": diffs[0] if diffs else None, "lower95": None}
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    lower = float(mean - t.ppf(0.95, len(diffs) - 1) * sd / len(diffs) ** 0.5)  # numpy scalars break JSON
    return {"seeds": seeds, "differences": [round(d, 4) for d in diffs], "mean": round(mean, 4),
            "std": round(sd, 4), "lower95": round(lower, 4)}


def chosen_ratios(runs: dict[int, dict]) -> dict[str, dict[str, float]] | None:
    """sac.ratio auto: the ratio chosen for each task, per seed (None for a fixed ratio)."""
    chosen = {str(seed): {task: sweep["chosen"] for task, sweep in record.get("ratio_sweeps", {}).items()}
              for seed, record in sorted(runs.items())}
    return chosen if any(chosen.values()) else None


def against_reference(records: dict[str, dict[int, dict]], reference: Path | None) -> dict | None:
    """Every guarded method of this invocation vs seq-ft per seed, judged by the issue's toy targets:
    seq-ft of an earlier results file (seq-ft is deterministic per seed: the merged code reproduced the
    pre-merge figures to every digit) or, without one, this invocation's own seq-ft runs."""
    if reference is not None:
        earlier = read_json(reference)["methods"]["seq-ft"]["per_seed"]
        theirs = {int(seed): {"metrics": metrics} for seed, metrics in earlier.items()}
        source = str(reference.relative_to(REPO) if reference.is_relative_to(REPO) else reference)
    elif records.get("seq-ft"):
        theirs, source = records["seq-ft"], "seq-ft of this invocation"
    else:
        return None
    compared = {}
    for method, ours in records.items():
        if method == "seq-ft" or not ours:
            continue
        last, bwt = paired(ours, theirs, "last"), paired(ours, theirs, "bwt")
        mean_bwt = statistics.mean(r["metrics"]["bwt"] for r in ours.values())
        retention = statistics.mean(r["metrics"]["general_retention"] for r in ours.values())
        compared[method] = {
            "last_difference": last, "bwt_gain": bwt,
            "last_above_seq_ft_beyond_seed_noise": last["lower95"] is not None and last["lower95"] > 0,
            "bwt_at_least_minus_10": mean_bwt >= -10.0, "general_retention_at_least_0.9": retention >= 0.9}
    if not compared:
        return None
    return {"reference": source, "methods": compared,
            "criterion": "paired by seed against seq-ft of the reference: Last gain with a one-sided 95% t "
                         "lower bound above 0; mean BWT >= -10; mean general retention >= 0.9"}


def summarise(records: dict[str, dict[int, dict]]) -> dict:
    methods = {}
    for method, runs in records.items():
        if not runs:
            continue
        first = next(iter(runs.values()))
        rows, cols = len(first["accuracy"]), len(first["accuracy"][0])
        matrix = [[round(statistics.mean(r["accuracy"][i][j] for r in runs.values()), 2) for j in range(cols)]
                  for i in range(rows)]
        n_tasks = len(first["tasks"])
        methods[method] = {
            "seeds": sorted(runs),
            **{key: mean_std([r["metrics"][key] for r in runs.values()]) for key in SUMMARY_KEYS},
            # plasticity: accuracy on each task right after learning it, mean_t a_{t,t} (not a METHODS.md
            # metric; it shows what a low BWT may have been bought with)
            "learning_accuracy": mean_std([statistics.mean(r["accuracy"][t][t - 1]
                                                           for t in range(1, n_tasks + 1))
                                           for r in runs.values()]),
            "per_seed": {str(s): r["metrics"] for s, r in sorted(runs.items())},
            "accuracy_mean": matrix,
            "chosen_ratio": chosen_ratios(runs),
        }
    comparison = None
    if records.get("sac+uir") and records.get("seq-ft"):
        bwt = paired(records["sac+uir"], records["seq-ft"], "bwt")
        last = paired(records["sac+uir"], records["seq-ft"], "last")
        retention = paired(records["sac+uir"], records["seq-ft"], "general_retention")
        comparison = {
            "bwt_gain": bwt, "last_difference": last, "general_retention_difference": retention,
            "bwt_improved_beyond_seed_noise": bwt["lower95"] is not None and bwt["lower95"] > 0,
            "last_within_5_points": last["mean"] is not None and last["mean"] >= -5.0,
            "criterion": "BWT gain of sac+uir over seq-ft (paired by seed) has a one-sided 95% t lower bound "
                         "above 0; Last of sac+uir is at most 5 points below seq-ft (mean over seeds)",
        }
    return {"methods": methods, "sac_uir_vs_seq_ft": comparison}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "demo" / "continual.yaml")
    parser.add_argument("--base-dir", type=Path, default=REPO / "outputs" / "continual_base")
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "continual_bench")
    parser.add_argument("--threads", type=int, help="torch threads (1 is fastest on a crowded machine)")
    parser.add_argument("--output", type=Path, default=RESULTS / "continual_forgetting.json")
    parser.add_argument("--reference", type=Path, help="an earlier results file whose seq-ft per-seed metrics "
                        "sac+uir is compared with (instead of running seq-ft again)")
    parser.add_argument("--probes", choices=["test", "validation"], default="test",
                        help="validation: answer every probe on the synthetic validation twin (another seed), "
                        "to choose between configurations without reading the test sets")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides for every run")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ensure_base(args.base_dir)
    records: dict[str, dict[int, dict]] = {method: {} for method in args.methods}
    failures = {}
    for seed in args.seeds:  # seed-major: a partial benchmark still compares every method
        for method in args.methods:
            done = run_dir(args.work_dir, method, seed) / "continual.json"
            try:
                records[method][seed] = read_json(done) if done.is_file() else \
                    run_one(args.recipe, args.work_dir, args.base_dir, method, seed, args.overrides,
                                                     args.probes)
            except Exception as exc:  # keep going: one broken run must not cost the others
                failures[f"{method}/seed{seed}"] = "".join(traceback.format_exception_only(exc)).strip()
                log.error("run %s seed %d failed:\n%s", method, seed, traceback.format_exc())
            write_results(args, records, failures, time.perf_counter() - started)


def write_results(args, records: dict[str, dict[int, dict]], failures: dict, seconds: float) -> None:
    summary = summarise(records)
    any_record = next((r for runs in records.values() for r in runs.values()), None)
    result = {
        "benchmark": "continual_forgetting",
        "setup": {
            "recipe": str(args.recipe.relative_to(REPO) if args.recipe.is_relative_to(REPO) else args.recipe),
            "overrides": args.overrides, "seeds": args.seeds, "methods": args.methods, "probe_sets": args.probes,
            "tasks": any_record["tasks"] if any_record else None,
            "probes": any_record["probes"] if any_record else None,
            "accuracy_definition": any_record["provenance"]["accuracy_definition"] if any_record else None,
            "base_model": str(args.base_dir / "base" / "model"), "work_dir": str(args.work_dir),
        },
        **summary,
        "vs_reference_seq_ft": against_reference(records, args.reference),
        "failures": failures,
        "complete": not failures and all(len(records[m]) == len(args.seeds) for m in args.methods),
        "machine": machine(),
        "wall_seconds_this_invocation": round(seconds, 1),
        "provenance": provenance(),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.output, result)
    if summary["methods"]:
        plot_continual_methods(result, args.output.with_suffix(".png"))


if __name__ == "__main__":
    main()
