"""Training-step time of the demo's stages on an idle machine and beside one competing CPU-bound process.

On the 2-core machines this project runs on, one other busy process slowed the demo's tower stage
10× and its base-stage steps 25×, far beyond the 2× a fair share of the cores explains. The suspect
is the OpenMP thread team torch runs its intra-op work on: with two threads per op and one core taken,
every parallel region waits for the thread the scheduler parked, and the waiting thread spins for a
core the competitor needs. This bench measures it instead of guessing.

For each thread policy (how the child process is started: environment variables set before torch and
its OpenMP runtime initialise) it runs a child process that trains a few steps of a demo stage (the
real stage recipe, model preparation, data reading and collator; a plain AdamW loop, so the Trainer's
own costs are not counted) and reports the median step time — once with the machine otherwise as it
is, once beside ``python -c 'while True: pass'``. Conditions are interleaved over ``--repeats`` rounds
so a change in background load hits every condition alike; the ratios compare figures of this one run.

    python bench/contention.py [--steps 12] [--repeats 2] [--workloads vision base]

Writes bench/results/contention.json (with the load average seen before each measurement: the machine
is shared, so "idle" means "no competitor started by this bench").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
RECIPES = {"vision": REPO / "recipes" / "demo" / "vision.yaml", "base": REPO / "recipes" / "demo" / "base.yaml"}
# Environment of the child per policy; "default" is what a user shell gives (nothing set).
POLICIES: dict[str, dict[str, str]] = {
    "default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin-10k": {"GOMP_SPINCOUNT": "10000"},
    "1-thread": {"OMP_NUM_THREADS": "1"},
}
COMPETITOR = [sys.executable, "-c", "while True: pass"]


def child(workload: str, data_dir: str, steps: int, warmup: int) -> dict:
    """Runs in the measured process: ``steps`` timed training steps of one demo stage."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from torch.utils.data import DataLoader

    from medvlm.data.collate import ModalityLengthGroupedSampler
    from medvlm.data.images import ImagePreparer
    from medvlm.data.reading import read_samples
    from medvlm.model.build import trainable_components
    from medvlm.recipe import load_recipe
    from medvlm.train.setup import prepare_model, supervised_setup
    from medvlm.train.stage import SETUPS

    recipe = load_recipe(RECIPES[workload], [f"output.dir={data_dir}/run"], {"output_dir": data_dir})
    torch.manual_seed(0)
    model, processor, _ = prepare_model(recipe, trainable_components(recipe))
    samples, _ = read_samples(recipe.data.train, image_check="none")
    preparer = ImagePreparer(processor.image_processor, recipe.data.image_aspect_ratio)
    setup = SETUPS.get(recipe.train.stage, supervised_setup)(recipe, model, processor, samples, preparer)
    size = recipe.train.per_device_batch_size
    sampler = ModalityLengthGroupedSampler(setup.dataset.lengths, setup.dataset.has_image, size, seed=0)
    loader = DataLoader(setup.dataset, batch_size=size, sampler=sampler, collate_fn=setup.collator)
    batches = []
    for batch in loader:  # as the Trainer batches; collated up front: the step time is compute, not decoding
        batches.append(batch)
        if len(batches) == warmup + steps:
            break
    module = setup.train_model
    module.train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for batch in batches:
        started = time.perf_counter()
        loss = module(**batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    timed = times[warmup:]
    return {"median_step_s": statistics.median(timed), "mean_step_s": statistics.fmean(timed),
            "steps": len(timed), "torch_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def measure(workload: str, policy: str, loaded: bool, data_dir: str, steps: int, warmup: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                             "GOMP_SPINCOUNT", "MKL_NUM_THREADS")}
    env.update(POLICIES[policy])
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    load_before = os.getloadavg()[0]
    competitor = subprocess.Popen(COMPETITOR) if loaded else None
    try:
        done = subprocess.run([sys.executable, __file__, "--child", workload, "--data", data_dir,
                               "--steps", str(steps), "--warmup", str(warmup)],
                              env=env, capture_output=True, text=True, check=True)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result.update(workload=workload, policy=policy, loaded=loaded, load_average_before=round(load_before, 2))
    print(json.dumps(result), flush=True)
    return result


def scheduling() -> str | None:
    """This process's autogroup and its nice value (Linux): the bench's priority against other sessions."""
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--child", choices=list(RECIPES), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=str(RESULTS / "contention.json"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.steps, args.warmup)))
        return

    started = time.time()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            for workload in args.workloads:
                for policy in args.policies:
                    for loaded in (False, True):
                        runs.append(measure(workload, policy, loaded, tmp, args.steps, args.warmup))
    table = {}
    for workload in args.workloads:
        for policy in args.policies:
            idle = statistics.median(r["median_step_s"] for r in runs
                                     if r["workload"] == workload and r["policy"] == policy and not r["loaded"])
            loaded = statistics.median(r["median_step_s"] for r in runs
                                       if r["workload"] == workload and r["policy"] == policy and r["loaded"])
            table.setdefault(workload, {})[policy] = {
                "idle_step_s": round(idle, 4), "loaded_step_s": round(loaded, 4),
                "slowdown_loaded_vs_idle": round(loaded / idle, 2)}
        default_idle = table[workload].get("default", {}).get("idle_step_s")
        if default_idle:
            for row in table[workload].values():
                row["idle_vs_default_idle"] = round(row["idle_step_s"] / default_idle, 2)
    result = {
        "what": "median training-step time of demo stages (real recipe, model, data, collator; AdamW loop) "
                "per thread policy, without and with one competing CPU-bound process",
        "policies": POLICIES, "summary": table, "runs": runs,
        "setup": {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "cpus": os.cpu_count(),
                  "autogroup": scheduling(), "python": platform.python_version(),
                  "machine": platform.processor() or platform.machine(),
                  "seconds": round(time.time() - started, 1)},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
