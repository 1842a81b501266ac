"""``medvlm demo``: the whole curriculum on a CPU in minutes, ending in scores.

Runs ``recipes/demo/pipeline.yaml``: a tiny "general LLaVA" is built from scratch on the general
synthetic data (CLIP-style vision pretraining, then projector and language model), adapted through
LLaVA-Med's three stages on the synthetic medical data, and evaluated — before and after — on the
synthetic medical VQA test set and on the general probe. Leaves ``DIR/scores.json`` (the final
model on medical VQA), ``DIR/summary.json``, a readable ``DIR/summary.md`` and the evaluation
report ``DIR/report.html`` + ``DIR/report.json`` (the final model, compared item by item with the
other evaluated stages as baselines).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medvlm.errors import MedvlmError
from medvlm.eval.report import build_report
from medvlm.io import write_json, write_text
from medvlm.resources import recipes_dir
from medvlm.rundir import SCORES
from medvlm.runs.pipeline import load_pipeline, run_pipeline


def _strict(scores: dict[str, Any]) -> dict[str, Any]:
    return scores["metrics"]["strict"]


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def summarize(evaluations: dict[str, dict[str, dict[str, Any]]], seconds: dict[str, float],
              wall: float) -> tuple[dict[str, Any], str]:
    rows = []
    for stage, by_dataset in evaluations.items():
        for dataset, scores in by_dataset.items():
            strict = _strict(scores)
            rows.append({"model": stage, "dataset": dataset, "n": scores["n"],
                         "closed_accuracy": strict["closed_accuracy"],
                         "open_exact_match": strict["open_exact_match"], "open_f1": strict["open_f1"]})
    table = ["| model | eval set | n | closed accuracy | open exact match | open F1 |", "|---|---|---|---|---|---|"]
    table += [f"| {r['model']} | {r['dataset']} | {r['n']} | {_fmt(r['closed_accuracy'])} | "
              f"{_fmt(r['open_exact_match'])} | {_fmt(r['open_f1'])} |" for r in rows]
    timing = [f"- {name}: {secs:.1f} s" for name, secs in seconds.items()]
    text = "\n".join(["# medvlm demo", "", f"Wall time: {wall:.1f} s ({wall / 60:.1f} min)", "",
                      "Strict metrics, percent (see docs: no substring credit).", "", *table, "",
                      "Time per step:", *timing, ""])
    return {"wall_seconds": round(wall, 2), "stage_seconds": seconds, "results": rows}, text


def run_demo(output: str | Path, overrides: list[str] | None = None, recipe: str | Path | None = None,
             guarded: bool = False) -> str:
    recipe_path = Path(recipe) if recipe else recipes_dir() / "demo" / "pipeline.yaml"
    if not recipe_path.is_file():
        raise MedvlmError(f"{recipe_path}: demo recipe not found (medvlm must be installed from its "
                          "repository checkout, or pass --recipe)")
    started = time.perf_counter()
    plain = [text for text in overrides or [] if not text.startswith("continual.")]  # those address --guarded
    pipeline = load_pipeline(recipe_path, [f"output.dir={output}", *plain])
    result = run_pipeline(pipeline)
    wall = time.perf_counter() - started
    summary, text = summarize(result.evaluations, result.stage_seconds, wall)
    out, layout = pipeline.output_dir, pipeline.layout
    final_stage = pipeline.stages[-1][0]
    final = result.evaluations.get(final_stage, {})
    if final:
        write_json(out / SCORES, next(iter(final.values())))
    if guarded:  # the curriculum again, guarded, beside this one (medvlm.runs.guarded_demo)
        from medvlm.runs.guarded_demo import run_guarded_demo

        text += "\n" + run_guarded_demo(out, overrides)
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", text)
    if final:
        baselines = [layout.eval(stage) for stage in result.evaluations if stage != final_stage]
        build_report([layout.eval(final_stage)], out / "report.html", baseline=baselines or None,
                     title="medvlm demo: synthetic medical VQA")
        text += f"\nReport: {out / 'report.html'}\n"
    return text
