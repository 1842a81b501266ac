"""Build the demo's general base (the tiny "general LLaVA") and ship it inside the package.

A real user adapts released general LLaVA weights to medicine; building those is not their job. The
demo mirrors that: ``recipes/demo/general_base.yaml`` (CLIP-style tower pretraining, then projector
and language model on the general synthetic data) is run once by this module, and the resulting
model is shipped as ``medvlm/resources/general_base`` with a ``build.json`` record and a
``SHA256SUMS`` manifest. ``medvlm demo`` starts from it; ``medvlm demo --from-scratch`` builds it
again with :func:`build_general_base`.

The build is deterministic on a CPU: seeded data generation, tokenizer, initial weights and data
order, and a fixed number of intra-op threads (:mod:`medvlm.runs.threads`), because how a matrix
product is split across threads decides the order of its floating-point sums. A rebuild on the same
kind of CPU (:func:`cpu_kind`, recorded in ``build.json``) gives the same bits (the slow test checks
it); another kind runs other kernels (AVX2 instead of AVX-512, another vendor's) and sums in another
order, so its build is another draw of the training noise.

    python -m medvlm.runs.general_base [--output medvlm/resources/general_base] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import logging
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
import transformers

import medvlm
from medvlm.io import MARKER, read_json, replace_dir, write_json
from medvlm.resources import GENERAL_BASE, MANIFEST, recipes_dir, write_manifest
from medvlm.runs.pipeline import Pipeline, PipelineResult, load_pipeline, run_pipeline
from medvlm.runs.threads import CPU_THREADS, cpu_threads

log = logging.getLogger("medvlm")

RECIPE = Path("demo") / "general_base.yaml"  # under recipes/
BUILD_RECORD = "build.json"


def load_build(workdir: str | Path, overrides: list[str] | None = None) -> Pipeline:
    """The general-base pipeline writing into ``workdir`` (stage overrides as for ``medvlm pipeline``)."""
    return load_pipeline(recipes_dir() / RECIPE, [f"output.dir={workdir}", *(overrides or [])])


def build_general_base(workdir: str | Path, overrides: list[str] | None = None,
                       ) -> tuple[Pipeline, PipelineResult, Path]:
    """Run the general-base pipeline into ``workdir``; returns it, its result and the model directory."""
    pipeline = load_build(workdir, overrides)
    with cpu_threads():
        result = run_pipeline(pipeline)
    return pipeline, result, pipeline.layout.stage(pipeline.stages[-1][0]).model


# CPU features that select which kernels torch and its BLAS run for float32 work
_KERNEL_FLAGS = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile")


def cpu_kind() -> str:
    """What decides this CPU's floating-point results: architecture, vendor, torch's kernel level and
    the instruction-set features its libraries dispatch on (read from /proc/cpuinfo on Linux)."""
    vendor, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id":
                vendor = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    features = "+".join(flag for flag in _KERNEL_FLAGS if flag in flags) or "none"
    return f"{platform.machine()} {vendor} {torch.backends.cpu.get_cpu_capability()} {features}"


def build_record(pipeline: Pipeline) -> dict[str, Any]:
    """What built the shipped model: recipe, resolved stage recipes, training outcome, versions.

    Paths of the build directory and the checkout are replaced by ``${output_dir}`` and ``recipes``,
    so the record is the same wherever the build ran.
    """
    def portable(text: str) -> str:
        return text.replace(str(pipeline.output_dir), "${output_dir}").replace(str(recipes_dir()), "recipes")

    train = {}
    for name, _ in pipeline.stages:
        summary = read_json(pipeline.layout.stage(name).summary)
        train[name] = {key: summary[key] for key in ("global_step", "train_loss", "samples")}
    return {
        "built_by": "python -m medvlm.runs.general_base",
        "recipe": f"recipes/{RECIPE.as_posix()}",
        "stages": {name: portable(recipe.to_yaml()) for name, recipe in pipeline.stages},
        "train": train,
        "threads": CPU_THREADS,
        "versions": {"medvlm": medvlm.__version__, "torch": torch.__version__,
                     "transformers": transformers.__version__, "python": platform.python_version()},
        "machine": platform.machine(),
        "cpu": cpu_kind(),
    }


def ship(pipeline: Pipeline, model_dir: Path, destination: str | Path = GENERAL_BASE) -> dict[str, str]:
    """Copy the built model to ``destination`` with its build record and manifest (atomically)."""
    destination = Path(destination)
    staging = destination.with_name(f".{destination.name}-staging")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(model_dir, staging, ignore=shutil.ignore_patterns(MARKER))  # a resource, not a run's output
    write_json(staging / BUILD_RECORD, build_record(pipeline))
    sums = write_manifest(staging)
    replace_dir(staging, destination)
    return sums


def model_digests(sums: dict[str, str]) -> dict[str, str]:
    """The manifest entries of the model itself (what a rebuild must reproduce), without the build record."""
    return {name: digest for name, digest in sums.items() if name not in (BUILD_RECORD, MANIFEST)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medvlm.runs.general_base", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(GENERAL_BASE), help="where the model is shipped (default: %(default)s)")
    parser.add_argument("--workdir", help="build directory to keep (default: a temporary one, removed after)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="pipeline overrides, e.g. base.train.max_steps=5")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with tempfile.TemporaryDirectory(prefix="general-base-") as scratch:
        pipeline, _, model_dir = build_general_base(args.workdir or scratch, args.overrides)
        sums = ship(pipeline, model_dir, args.output)
    size = sum(path.stat().st_size for path in Path(args.output).iterdir())
    print("".join(f"{digest}  {name}\n" for name, digest in sums.items()), end="")
    print(f"shipped {args.output} ({size / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
