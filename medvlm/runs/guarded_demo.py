"""``medvlm demo --guarded``: the demo curriculum again, guarded against forgetting, beside the plain one.

After the plain demo (``recipes/demo/pipeline.yaml`` in ``OUT``), ``recipes/demo/pipeline_guarded.yaml``
runs in ``OUT/guarded`` from the same general base: align → instruct → finetune as continual tasks
(SAC with r chosen per stage, UIR; its finetune stage also rehearses general questions, for longer).
The synthetic data is linked from ``OUT`` (the same generator and seed would write the same files).
The plain run's stage models then answer the same probes (``OUT/guarded/plain_probes/<stage>/``), so
``OUT/summary.md`` can put both curricula side by side, stage by stage: medical accuracy and general
retention, with every setting a guarded stage trains with differently from the plain one.
``OUT/guarded/report.html`` has the guarded run's accuracy matrix and ratio sweeps.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from medvlm.claims import claim
from medvlm.continual.record import read_continual_record
from medvlm.eval.report import build_report
from medvlm.io import write_json
from medvlm.resources import recipes_dir
from medvlm.rundir import ContinualDir, PipelineDir
from medvlm.runs.continual import evaluate_row
from medvlm.runs.pipeline import Pipeline, guarded_sequence, load_pipeline, run_pipeline
from medvlm.runs.probes import percent_cell, probe_cells, stage_summary
from medvlm.train.outputs import claim_output_dir

GUARDED = "guarded"  # the guarded run's directory under the demo's
PLAIN_PROBES = "plain_probes"  # the plain run's stage models on the guarded run's probes, under it
MEDICAL, GENERAL = "medical", "general"  # the probes of recipes/demo/pipeline_guarded.yaml


def link_data(pipeline: Pipeline, data: Path) -> None:
    """Make ``OUT/synthetic`` of ``pipeline`` a link to already generated synthetic data; the output
    directory is claimed for the pipeline first (a folder holding only the link would otherwise be
    taken for someone else's)."""
    out, link = pipeline.output_dir, pipeline.output_dir / data.name
    with claim(out):
        claim_output_dir(out, pipeline.recipe, "pipeline run")
        if data.is_dir() and not link.exists():
            link.symlink_to(data.resolve(), target_is_directory=True)


def plain_stage_probes(plain_out: Path, pipeline: Pipeline) -> dict[str, dict[str, dict[str, Any]]]:
    """The plain run's model after each of the guarded run's stages, on the guarded run's probes
    (stage → probe → :func:`medvlm.runs.probes.probe_cells`); stages the plain run lacks are left out."""
    sequence = guarded_sequence(pipeline)
    plain = PipelineDir(plain_out)
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for task in sequence.tasks:
        if not plain.stage(task.name).complete:
            continue
        eval_dir = pipeline.output_dir / PLAIN_PROBES / task.name
        accuracy = evaluate_row(sequence, plain.stage(task.name).model, eval_dir)
        cells[task.name] = {probe: {**probe_cells(eval_dir, probe), "accuracy": value}
                            for (probe, _), value in zip(sequence.probe_sets(), accuracy, strict=True)}
    return cells


#: where a stage writes and what it starts from differ between the curricula by construction
UNCOMPARED = ("output.", "model.path", "name")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: Any) -> str:
    """A setting as a reader wants it: data sources by what they hold (not where the run linked them)."""
    if isinstance(value, list) and all(isinstance(item, dict) and "dataset" in item for item in value):
        def source(item: dict[str, Any]) -> str:
            subset = (item.get("options") or {}).get("subset")
            limit = f" (limit {item['limit']})" if item.get("limit") else ""
            return f"{item['dataset']}{' ' + subset if subset else ''} {item.get('split', '')}{limit}".strip()
        return " + ".join(source(item) for item in value) or "none"
    return str(value)


def stage_differences(plain_out: Path, pipeline: Pipeline) -> list[str]:
    """Per stage the plain run also ran, the settings the guarded recipe trains it with differently
    (``"finetune: train.max_steps 1600 → 2000; ..."``): the side-by-side table compares curricula,
    and a reader must know when they did not train alike."""
    plain = PipelineDir(plain_out)
    lines = []
    for name, recipe in pipeline.stages:
        stored = plain.stage(name).recipe
        if not stored.is_file():
            continue
        theirs = _flat(yaml.safe_load(stored.read_text(encoding="utf-8")))
        ours = _flat(yaml.safe_load(recipe.to_yaml()))
        changed = [f"{key} {_shown(theirs.get(key))} → {_shown(ours.get(key))}"
                   for key in sorted(set(theirs) | set(ours))
                   if not key.startswith(UNCOMPARED) and _shown(theirs.get(key)) != _shown(ours.get(key))]
        if changed:
            lines.append(f"- {name}: " + "; ".join(changed))
    return lines


def side_by_side(guarded_rows: list[dict[str, Any]], plain: dict[str, dict[str, dict[str, Any]]],
                 initial_general: float) -> str:
    """Markdown: per stage, the medical probe's closed and open exact, the general probe's open exact and
    general retention (pooled general accuracy / the initial model's, ``initial_general``), plain | guarded."""
    initial = guarded_rows[0]["probes"]
    if not {MEDICAL, GENERAL} <= set(initial):  # another recipe's probes: nothing to put side by side
        return ""

    def cells(probes: dict[str, dict[str, Any]] | None, retention: float | None) -> list[str]:
        if probes is None:
            return ["—"] * 4
        return [percent_cell(probes[MEDICAL]["closed_accuracy"]), percent_cell(probes[MEDICAL]["open_exact_match"]),
                percent_cell(probes[GENERAL]["open_exact_match"]), "—" if retention is None else f"{retention:.3f}"]

    header = ["stage", *(f"{curriculum}: {column}" for curriculum in ("plain", "guarded")
                         for column in ("medical closed", "medical open exact", "general open exact",
                                        "general retention")), "SAC r"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in guarded_rows:
        stage = row["model"]
        ratio = "—" if row["sac_ratio"] is None else f"{row['sac_ratio']:g}"
        if stage == "initial":
            own, own_retention = initial, row["general_retention"]
        else:
            own = plain.get(stage)
            own_retention = own[GENERAL]["accuracy"] / initial_general if own and initial_general else None
        lines.append("| " + " | ".join([stage, *cells(own, own_retention),
                                        *cells(row["probes"], row["general_retention"]), ratio]) + " |")
    return "\n".join(lines)



def load_guarded_demo(plain_out: str | Path, base_dir: str | Path, overrides: list[str] | None = None,
                      recipe: str | Path | None = None) -> Pipeline:
    """The guarded curriculum writing into ``plain_out/guarded`` from ``base_dir``, resolved (and so
    checked) before the plain demo spends minutes training."""
    recipe_path = Path(recipe) if recipe else recipes_dir() / "demo" / "pipeline_guarded.yaml"
    return load_pipeline(recipe_path, [f"output.dir={Path(plain_out) / GUARDED}", f"model.path={base_dir}",
                                       "model.preset=null", *(overrides or [])])


def run_guarded_demo(plain_out: str | Path, pipeline: Pipeline) -> tuple[str, float]:
    """Run the guarded curriculum (:func:`load_guarded_demo`) beside a finished plain demo in
    ``plain_out``; returns the Markdown to append to its summary and the seconds it took."""
    started = time.perf_counter()
    plain_out = Path(plain_out)
    out = pipeline.output_dir
    link_data(pipeline, plain_out / "synthetic")
    run_pipeline(pipeline)
    summary, table = stage_summary(out)
    plain = plain_stage_probes(plain_out, pipeline)
    record = read_continual_record(ContinualDir(out).record)
    initial_general = record.accuracy[0][record.probes.index(GENERAL)] if GENERAL in record.probes else 0.0
    summary["plain"] = plain
    write_json(out / "summary.json", summary)
    build_report([ContinualDir(out).record], out / "report.html", title="medvlm demo: the curriculum, guarded",
                 overwrite=True)  # its own run directory
    method = pipeline.recipe.continual.method if pipeline.recipe.continual else "none"
    differences = stage_differences(plain_out, pipeline)
    trained = (["The guarded recipe trains these stages differently from the plain one:", "", *differences, ""]
               if differences else [])
    text = "\n".join([f"## The curriculum, plain and guarded (continual.method {method})", "",
                      "Both start from the same general base and answer the same probes (test sets) after every "
                      "stage; strict metrics, percent.", "", *trained,
                      side_by_side(summary["rows"], plain, initial_general), "",
                      "### Guarded run, every probe", "", table, f"Report: {out / 'report.html'}", ""])
    return text, round(time.perf_counter() - started, 2)
