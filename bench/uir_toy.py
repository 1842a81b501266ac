"""UIR examined on the three-task toy: text-only inquiries, a λ sweep, masked vs unmasked MSE.

UIR alone did not reduce forgetting in ``continual_forgetting.json`` (BWT −35.8 vs −33.1 for
seq-ft), with λ = 1, the mask-aware mean and the general VQA questions stripped of their images as
inquiries. Here UIR (alone, no consolidator) runs the same sequence
(``recipes/demo/continual.yaml``, same base, same seeds) with the synthetic text-only general
questions (``general_text``) as inquiries, for every λ in ``--weights`` and both forms of the
hidden-state MSE: ``masked`` (mean over real tokens, medvlm's default) and ``unmasked`` (mean over
every position, padding included, as the research code). The mask-aware mean makes λ mean "per real
token"; the unmasked mean divides by padding too, so the same λ pulls less on short inquiries.

Compared, paired by seed, with seq-ft of ``--reference`` (seq-ft is deterministic per seed).

    python bench/uir_toy.py [--seeds 0] [--weights 1 10 100] [--forms masked unmasked]

Writes bench/results/uir_toy.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from continual_forgetting import REPO, RESULTS, ensure_base, mean_std, paired, run_one  # noqa: E402
from machine import machine  # noqa: E402

from medvlm.io import read_json, write_json  # noqa: E402
from medvlm.provenance import provenance  # noqa: E402

log = logging.getLogger("medvlm")
INQUIRIES = "[{dataset: synthetic, path: PLACEHOLDER, split: train, options: {subset: general_text}}]"


def config_name(weight: float, form: str) -> str:
    return f"uir_w{weight:g}_{form}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[1.0, 10.0, 100.0])
    parser.add_argument("--forms", nargs="+", choices=["masked", "unmasked"], default=["masked", "unmasked"])
    parser.add_argument("--recipe", type=Path, default=REPO / "recipes" / "demo" / "continual.yaml")
    parser.add_argument("--base-dir", type=Path, default=REPO / "outputs" / "continual_base")
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "uir_toy")
    parser.add_argument("--reference", type=Path, default=RESULTS / "continual_forgetting.json")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--output", type=Path, default=RESULTS / "uir_toy.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr, force=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    ensure_base(args.base_dir)
    reference = read_json(args.reference)["methods"]
    configs = [(w, f) for w in args.weights for f in args.forms]
    records: dict[str, dict[int, dict]] = {config_name(w, f): {} for w, f in configs}
    failures = {}
    for seed in args.seeds:
        for weight, form in configs:
            name = config_name(weight, form)
            work = args.work_dir / name
            done = work / "uir" / f"seed{seed}" / "continual.json"
            overrides = [f"continual.uir.weight={weight}", f"continual.uir.masked={form == 'masked'}",
                         "continual.uir.drop_images=false", f"continual.uir.inquiries={INQUIRIES}"]
            try:
                records[name][seed] = read_json(done) if done.is_file() else \
                    run_one(args.recipe, work, args.base_dir, "uir", seed, overrides)
            except Exception as exc:  # keep going: one broken run must not cost the others
                failures[f"{name}/seed{seed}"] = "".join(traceback.format_exception_only(exc)).strip()
                log.error("%s seed %d failed:\n%s", name, seed, traceback.format_exc())
            write(args, records, reference, failures, time.perf_counter() - started)


def write(args, records: dict[str, dict[int, dict]], reference: dict, failures: dict, seconds: float) -> None:
    seq_ft = {int(s): {"metrics": m} for s, m in reference["seq-ft"]["per_seed"].items()}
    old_uir = {int(s): {"metrics": m} for s, m in reference["uir"]["per_seed"].items()}
    configs = {}
    for name, runs in records.items():
        if not runs:
            continue
        configs[name] = {
            "seeds": sorted(runs),
            **{key: mean_std([r["metrics"][key] for r in runs.values()])
               for key in ("last", "bwt", "general_retention", "avg", "forgetting")},
            "learning_accuracy": mean_std([sum(r["accuracy"][t][t - 1] for t in range(1, 4)) / 3
                                           for r in runs.values()]),
            "accuracy": {str(s): r["accuracy"] for s, r in sorted(runs.items())},
            "vs_seq_ft": {key: paired(runs, seq_ft, key) for key in ("bwt", "last", "general_retention")},
        }
    result = {
        "benchmark": "uir_toy",
        "setup": {"recipe": str(args.recipe.relative_to(REPO)), "seeds": args.seeds, "weights": args.weights,
                  "forms": args.forms, "inquiries": "synthetic general_text (text-only general questions), "
                  "0.25 per task sample", "reference": str(args.reference.relative_to(REPO)),
                  "base_model": str(args.base_dir / "base" / "model")},
        "reference_seq_ft": {key: reference["seq-ft"][key] for key in ("last", "bwt", "general_retention")},
        "reference_uir_lambda1_masked_image_questions": {key: reference["uir"][key]
                                                         for key in ("last", "bwt", "general_retention")},
        "reference_uir_per_seed": {str(s): r["metrics"] for s, r in old_uir.items()},
        "configs": configs,
        "failures": failures,
        "machine": machine(),
        "wall_seconds_this_invocation": round(seconds, 1),
        "provenance": provenance(),
    }
    write_json(args.output, result)


if __name__ == "__main__":
    main()
