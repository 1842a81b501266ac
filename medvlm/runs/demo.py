"""``medvlm demo``: the whole curriculum on a CPU in minutes, ending in scores.

Starts, as a real user starts from general LLaVA weights, from the tiny "general LLaVA" shipped with
the package (``medvlm/resources/general_base``, checked against its SHA256 manifest first), runs
LLaVA-Med's three stages (``recipes/demo/pipeline.yaml``) on the synthetic medical data, and
evaluates the general base and the final model on the synthetic medical VQA test set and on the
general probe. ``--from-scratch`` first builds the general base (``recipes/demo/general_base.yaml``:
CLIP-style vision pretraining, then projector and language model on the general synthetic data) into
``DIR/general_base/`` and starts from that instead; both leave the same tables.

Leaves ``DIR/scores.json`` (the final model on medical VQA), ``DIR/summary.json``, a readable
``DIR/summary.md`` and the evaluation report ``DIR/report.html`` + ``DIR/report.json`` (the final
model, compared item by item with the base model as the baseline).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medvlm.claims import claim
from medvlm.errors import MedvlmError
from medvlm.eval.report import build_report
from medvlm.io import write_json, write_text
from medvlm.resources import general_base, recipes_dir
from medvlm.rundir import SCORES
from medvlm.runs.general_base import build_general_base, load_build
from medvlm.runs.guarded_demo import load_guarded_demo, run_guarded_demo
from medvlm.runs.pipeline import PipelineResult, evaluate, load_pipeline, run_pipeline
from medvlm.runs.probes import percent_cell
from medvlm.runs.threads import cpu_threads
from medvlm.train.outputs import claim_output_dir

BASE = "base"  # the name the starting general model is evaluated under


def _strict(scores: dict[str, Any]) -> dict[str, Any]:
    return scores["metrics"]["strict"]


def summarize(evaluations: dict[str, dict[str, dict[str, Any]]], seconds: dict[str, float], wall: float,
              base: str) -> tuple[dict[str, Any], str]:
    rows = []
    for stage, by_dataset in evaluations.items():
        for dataset, scores in by_dataset.items():
            strict = _strict(scores)
            rows.append({"model": stage, "dataset": dataset, "n": scores["n"],
                         "closed_accuracy": strict["closed_accuracy"],
                         "open_exact_match": strict["open_exact_match"], "open_f1": strict["open_f1"]})
    table = ["| model | eval set | n | closed accuracy | open exact match | open F1 |", "|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['dataset']} | {r['n']} | {percent_cell(r['closed_accuracy'])} | "
              f"{percent_cell(r['open_exact_match'])} | {percent_cell(r['open_f1'])} |" for r in rows]
    timing = [f"- {name}: {secs:.1f} s" for name, secs in seconds.items()]
    text = "\n".join(["# medvlm demo", "", f"Wall time: {wall:.1f} s ({wall / 60:.1f} min)", "",
                      f"General base ({BASE}): {base}", "",
                      "Strict metrics, percent (see docs: no substring credit).", "", *table, "",
                      "Time per step:", *timing, ""])
    return {"wall_seconds": round(wall, 2), "base_model": base, "stage_seconds": seconds, "results": rows}, text


def _split_build_overrides(overrides: list[str], build_stages: set[str]) -> tuple[list[str], list[str]]:
    """Overrides of the general-base build (its stages, or every stage) and those of the demo pipeline."""
    build = [text for text in overrides if text.partition(".")[0] in build_stages | {"*"}]
    demo = [text for text in overrides if text.partition(".")[0] not in build_stages]
    return build, demo


def run_demo(output: str | Path, overrides: list[str] | None = None, recipe: str | Path | None = None,
             from_scratch: bool = False, guarded: bool = False) -> str:
    """Run the demo into ``output``; returns the readable summary. Runs on one CPU thread (see
    :mod:`medvlm.runs.threads`: a competing process would otherwise slow it several-fold).

    ``guarded`` runs the curriculum a second time, guarded against forgetting, from the same base
    (:mod:`medvlm.runs.guarded_demo`); overrides of ``continual.*`` keys address that run only."""
    recipe_path = Path(recipe) if recipe else recipes_dir() / "demo" / "pipeline.yaml"
    if not recipe_path.is_file():
        raise MedvlmError(f"{recipe_path}: demo recipe not found (medvlm must be installed from its "
                          "repository checkout, or pass --recipe)")
    out = Path(output)
    build_stages = {name for name, _ in load_build(out / "general_base").stages}
    build_overrides, overrides = _split_build_overrides(list(overrides or []), build_stages)
    guarded_overrides = overrides
    overrides = [text for text in overrides if not text.startswith("continual.")]
    stray = [text for text in build_overrides if not text.startswith("*.")]
    if stray and not from_scratch:
        raise MedvlmError(f"override(s) {', '.join(stray)} address the general base's build stages "
                          f"({', '.join(sorted(build_stages))}); they apply only with --from-scratch")
    if from_scratch:
        build = load_build(out / "general_base", build_overrides)
        base_dir = build.layout.stage(build.stages[-1][0]).model
        base = f"built from scratch into {base_dir}"
    else:
        base_dir = general_base()
        base = f"shipped, {base_dir} (SHA256SUMS verified)"
    pipeline = load_pipeline(recipe_path, [f"output.dir={output}", f"model.path={base_dir}",
                                           "model.preset=null", *overrides])
    guarded_pipeline = load_guarded_demo(out, base_dir, guarded_overrides) if guarded else None
    with cpu_threads(), claim(out):
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        if from_scratch:
            # the demo's directory is claimed before the build writes into it: afterwards it would
            # look like a folder of someone else's files
            claim_output_dir(out, pipeline.recipe, "pipeline run")
            _, built, _ = build_general_base(out / "general_base", build_overrides)
            seconds.update(built.stage_seconds)
        result = run_pipeline(pipeline)
        seconds.update(result.stage_seconds)
        if pipeline.recipe.eval.datasets:
            evaluated = PipelineResult(result.output_dir)
            evaluate(pipeline, BASE, base_dir, evaluated)
            result.evaluations = {**evaluated.evaluations, **result.evaluations}
            seconds.update(evaluated.stage_seconds)
        if guarded_pipeline is not None:
            guarded_text, seconds["guarded curriculum"] = run_guarded_demo(out, guarded_pipeline)
        wall = time.perf_counter() - started
    summary, text = summarize(result.evaluations, seconds, wall, base)
    layout = pipeline.layout
    final_stage = pipeline.stages[-1][0]
    final = result.evaluations.get(final_stage, {})
    if final:
        write_json(out / SCORES, next(iter(final.values())))
    if guarded_pipeline is not None:
        text += "\n" + guarded_text
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", text)
    if final:
        baselines = [layout.eval(stage) for stage in result.evaluations if stage != final_stage]
        build_report([layout.eval(final_stage)], out / "report.html", baseline=baselines or None,
                     title="medvlm demo: synthetic medical VQA", overwrite=True)  # its own run directory
        text += f"\nReport: {out / 'report.html'}\n"
    return text
