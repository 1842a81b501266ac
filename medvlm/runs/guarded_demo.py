"""``medvlm demo --guarded``: the demo curriculum again, guarded against forgetting, beside the plain one.

After the plain demo (``recipes/demo/pipeline.yaml`` in ``OUT``), ``recipes/demo/pipeline_guarded.yaml``
runs in ``OUT/guarded`` from the same general base: align → instruct → finetune as continual tasks
(SAC with r chosen per stage, UIR). The synthetic data is linked from ``OUT`` (the same generator
and seed would write the same files). ``OUT/summary.md`` gains the per-stage table (medical accuracy
and general retention after every stage) and ``OUT/guarded/report.html`` the accuracy matrix and
ratio sweeps.
"""

from __future__ import annotations

import time
from pathlib import Path

from medvlm.claims import claim
from medvlm.eval.report import build_report
from medvlm.io import write_json
from medvlm.resources import recipes_dir
from medvlm.runs.pipeline import Pipeline, load_pipeline, run_pipeline
from medvlm.runs.probes import stage_summary
from medvlm.train.outputs import claim_output_dir

GUARDED = "guarded"  # the guarded run's directory under the demo's


def link_data(pipeline: Pipeline, data: Path) -> None:
    """Make ``OUT/synthetic`` of ``pipeline`` a link to already generated synthetic data; the output
    directory is claimed for the pipeline first (a folder holding only the link would otherwise be
    taken for someone else's)."""
    out, link = pipeline.output_dir, pipeline.output_dir / data.name
    with claim(out):
        claim_output_dir(out, pipeline.recipe, "pipeline run")
        if data.is_dir() and not link.exists():
            link.symlink_to(data.resolve(), target_is_directory=True)


def run_guarded_demo(plain_out: str | Path, base_dir: str | Path, overrides: list[str] | None = None,
                     recipe: str | Path | None = None) -> tuple[str, float]:
    """Run the guarded curriculum from ``base_dir`` beside a finished plain demo in ``plain_out``;
    returns the Markdown to append to its summary and the seconds it took."""
    started = time.perf_counter()
    plain_out = Path(plain_out)
    out = plain_out / GUARDED
    recipe_path = Path(recipe) if recipe else recipes_dir() / "demo" / "pipeline_guarded.yaml"
    pipeline = load_pipeline(recipe_path, [f"output.dir={out}", f"model.path={base_dir}", "model.preset=null",
                                           *(overrides or [])])
    link_data(pipeline, plain_out / "synthetic")
    run_pipeline(pipeline)
    summary, table = stage_summary(out)
    write_json(out / "summary.json", summary)
    build_report([out / "continual.json"], out / "report.html", title="medvlm demo: the curriculum, guarded")
    text = "\n".join(["## Guarded curriculum (SAC with r chosen per stage + UIR)", "", table,
                      f"Report: {out / 'report.html'}", ""])
    return text, round(time.perf_counter() - started, 2)
