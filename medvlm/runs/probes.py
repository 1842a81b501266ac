"""The probes of a guarded run, stage by stage: closed accuracy and open exact match of every probe
after every task, read back from the run directory.

``continual.json`` pools each probe into one accuracy (closed and open together); a curriculum is
judged on both halves separately (medical strict closed and open exact, general open exact), so
summaries and benchmarks read the probes' ``scores.json`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvlm.continual.record import read_continual_record
from medvlm.data.jsonfiles import load_json
from medvlm.errors import DataError
from medvlm.rundir import SCORES, ContinualDir


def probe_cells(eval_dir: Path, probe: str) -> dict[str, Any]:
    """Strict closed accuracy and open exact match (percent) of one model on one probe, pooled over the
    probe's sources (``eval_dir/<probe>/<dataset>/scores.json``), with their counts."""
    files = sorted((eval_dir / probe).glob(f"*/{SCORES}"))
    if not files:
        raise DataError(f"no scores of probe '{probe}'", file=str(eval_dir / probe))
    counts = {"closed": 0, "open": 0}
    hits = {"closed": 0.0, "open": 0.0}
    for file in files:
        strict = load_json(file)["metrics"]["strict"]
        for kind, key in (("closed", "closed_accuracy"), ("open", "open_exact_match")):
            n = int(strict[f"n_{kind}"])
            counts[kind] += n
            hits[kind] += (strict[key] or 0.0) * n / 100.0
    return {"probe": probe, "n_closed": counts["closed"], "n_open": counts["open"],
            "closed_accuracy": round(100.0 * hits["closed"] / counts["closed"], 2) if counts["closed"] else None,
            "open_exact_match": round(100.0 * hits["open"] / counts["open"], 2) if counts["open"] else None}


def probe_table(output_dir: str | Path) -> list[dict[str, Any]]:
    """One row per (model, probe) of a guarded run: the initial model first, then each task (see
    :func:`probe_cells`)."""
    layout = ContinualDir(Path(output_dir))
    record = read_continual_record(layout.record)
    models = [("initial", layout.initial_eval)]
    models += [(task, layout.task(index, task).eval) for index, task in enumerate(record.tasks, start=1)]
    return [{"model": model, **probe_cells(eval_dir, probe)} for model, eval_dir in models for probe in record.probes]


def percent_cell(value: float | None) -> str:
    """A percentage in a Markdown table (— where there is nothing to score)."""
    return "—" if value is None else f"{value:.1f}"


def stage_summary(output_dir: str | Path) -> tuple[dict[str, Any], str]:
    """Medical accuracy and general retention side by side, per stage, of a guarded run: a JSON-able
    summary and its Markdown table."""
    record = read_continual_record(ContinualDir(Path(output_dir)).record)
    table = probe_table(output_dir)
    general = record.probes.index(record.provenance.get("general_probe", "general")) \
        if record.provenance.get("general_probe", "general") in record.probes else None
    rows = []
    for index, model in enumerate(["initial", *record.tasks]):
        cells = {row["probe"]: row for row in table if row["model"] == model}
        retention = None
        if general is not None and record.accuracy[0][general]:
            retention = record.accuracy[index][general] / record.accuracy[0][general]
        sweep = record.ratio_sweeps.get(model)
        rows.append({"model": model, "probes": cells, "general_retention": retention,
                     "sac_ratio": sweep["chosen"] if sweep else None})
    probes = record.probes
    header = ["stage"] + [f"{p} {kind}" for p in probes for kind in ("closed", "open exact")] + \
        ["general retention", "SAC r"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["model"]]
        for probe in probes:
            cell = row["probes"][probe]
            cells += [percent_cell(cell["closed_accuracy"]), percent_cell(cell["open_exact_match"])]
        cells += ["—" if row["general_retention"] is None else f"{row['general_retention']:.3f}",
                  "—" if row["sac_ratio"] is None else f"{row['sac_ratio']:g}"]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join([f"Method {record.method}: strict closed accuracy and open exact match (percent) of every probe "
                      "after every stage; general retention = pooled general accuracy / the initial model's.", "",
                      *lines, ""])
    return {"method": record.method, "rows": rows}, text
