"""``medvlm demo --guarded``: the demo curriculum again, guarded against forgetting, beside the plain one.

After the plain demo (``recipes/demo/pipeline.yaml`` in ``OUT``), ``recipes/demo/pipeline_guarded.yaml``
runs in ``OUT/guarded``: the stages that build the general model are not trained again (their
finished directories and the synthetic data are linked from ``OUT``), then align → instruct →
finetune run as continual tasks (SAC with r chosen per stage, UIR). ``OUT/summary.md`` gains the
per-stage table of both runs and ``OUT/guarded/report.html`` the accuracy matrix and ratio sweeps.
"""

from __future__ import annotations

from pathlib import Path

from medvlm.eval.report import build_report
from medvlm.io import write_json
from medvlm.resources import recipes_dir
from medvlm.rundir import PipelineDir
from medvlm.runs.pipeline import load_pipeline, run_pipeline, task_start
from medvlm.runs.probes import stage_summary


def run_guarded_demo(plain_out: str | Path, overrides: list[str] | None = None,
                     recipe: str | Path | None = None) -> str:
    """Run the guarded curriculum beside a finished plain demo; returns the Markdown to append to its summary."""
    plain_out = Path(plain_out)
    out = plain_out / "guarded"
    recipe_path = Path(recipe) if recipe else recipes_dir() / "demo" / "pipeline_guarded.yaml"
    pipeline = load_pipeline(recipe_path, [f"output.dir={out}", *(overrides or [])])
    out.mkdir(parents=True, exist_ok=True)
    first = task_start(pipeline) or 0
    for name in [stage for stage, _ in pipeline.stages[:first]] + ["synthetic"]:
        source, link = plain_out / name, out / name
        finished = PipelineDir(plain_out).stage(name).complete or name == "synthetic"
        if finished and source.is_dir() and not link.exists():
            link.symlink_to(source.resolve(), target_is_directory=True)
    run_pipeline(pipeline)
    summary, table = stage_summary(out)
    write_json(out / "summary.json", summary)
    build_report([out / "continual.json"], out / "report.html", title="medvlm demo: the curriculum, guarded")
    return "\n".join(["## Guarded curriculum (SAC with r chosen per stage + UIR)", "", table,
                      f"Report: {out / 'report.html'}", ""])
