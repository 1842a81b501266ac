"""``medvlm report``: report.json plus a self-contained report.html.

Inputs are ``scores.json`` files (with their ``scores.items.jsonl``), ``continual.json`` files, or
run directories searched for both. The HTML holds, in order: the headline table in the
literature's form (open recall / closed accuracy per data set, LLaVA-Med parity) beside the strict
figures; input problems (missing predictions, skipped lines) so nothing is silent; comparisons with
a baseline; then per evaluation the per-category bars with 95 % intervals, the closed-answer
confusion matrix, the worst errors with thumbnails, the items only the lenient metric credits, and
provenance; and for continual-learning runs the accuracy matrix, the forgetting metrics and a
per-method comparison. Plots and thumbnails are base64 PNGs inside the file; nothing is fetched.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

import medvlm
from medvlm.continual.record import ContinualRecord, read_continual_record
from medvlm.data.jsonfiles import iter_records, load_json
from medvlm.errors import DataError, OutputError
from medvlm.eval import plots
from medvlm.eval.compare import paired_comparison
from medvlm.eval.metrics import Metric, item_values, metrics, with_verdict
from medvlm.eval.score import items_path
from medvlm.io import check_new_output, record_written, write_json, write_text
from medvlm.provenance import git_commit
from medvlm.rundir import CONTINUAL, SCORES

CONTINUAL_METRICS = ("avg", "last", "bwt", "fwt", "forgetting", "general_retention")
WORST_ERRORS = 12
LENIENT_EXAMPLES = 10


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """One scores.json with its per-item rows (None when the items file is not there)."""

    path: Path
    scores: dict[str, Any]
    items: list[dict[str, Any]] | None
    model: str
    dataset: str
    role: str = "system"  # or "baseline"


def _read_items(path: Path) -> list[dict[str, Any]] | None:
    """The per-item rows beside a scores.json; None when they are not there (the report says so)."""
    return [record for _, record in iter_records(path)] if path.is_file() else None


def load_evaluation(path: Path, role: str = "system") -> Evaluation:
    scores = load_json(path)
    if not isinstance(scores, dict):
        raise DataError("expected a scores object", file=str(path))
    for key in ("n", "metrics", "breakdown"):
        if key not in scores:
            raise DataError(
                "not a medvlm scores.json (run 'medvlm score' to make one)", file=str(path), key=key
            )
    items_file = path.parent / scores["items_file"] if scores.get("items_file") else items_path(path)
    provenance = scores.get("provenance", {})
    return Evaluation(path, scores, _read_items(items_file), model=_model_label(provenance),
                      dataset=str(provenance.get("dataset") or "dataset"), role=role)


def _model_label(provenance: dict[str, Any]) -> str:
    if provenance.get("model_label"):
        return str(provenance["model_label"])
    predictions = Path(str((provenance.get("predictions") or {}).get("file") or ""))
    if predictions.stem and predictions.stem not in ("answers", "<memory>"):
        return predictions.stem
    model_id = provenance.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        return "model"
    path = Path(model_id)  # a run's OUT/<stage>/model is named by its stage
    return path.parent.name if path.name == "model" and path.parent.name else path.name


def _digest(scores: dict[str, Any]) -> str:
    provenance = scores.get("provenance", {})
    key = [
        scores.get("metrics"),
        (provenance.get("predictions") or {}).get("sha256"),
        provenance.get("dataset"),
    ]
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def collect(
    inputs: list[str | Path], role: str = "system"
) -> tuple[list[Evaluation], list[tuple[Path, ContinualRecord]]]:
    """Scores and continual runs named by ``inputs`` (files or directories searched recursively),
    each scores file once even when a run keeps a copy of it (the demo's top-level scores.json)."""
    evaluations: list[Evaluation] = []
    continual: list[tuple[Path, ContinualRecord]] = []
    seen: set[str] = set()
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            score_files = sorted(p for p in path.rglob("*.json") if p.name == SCORES)
            continual_files = sorted(path.rglob(CONTINUAL))
            if not score_files and not continual_files:
                raise DataError("no scores.json or continual.json inside", file=str(path))
        elif path.is_file():
            score_files, continual_files = ([], [path]) if path.name == CONTINUAL else ([path], [])
        else:
            raise DataError("no such file or directory", file=str(path))
        for file in score_files:
            evaluation = load_evaluation(file, role)
            digest = _digest(evaluation.scores)
            if digest not in seen:
                seen.add(digest)
                evaluations.append(evaluation)
        continual += [(file, read_continual_record(file)) for file in continual_files]
    return evaluations, continual


# --------------------------------------------------------------------------------------------------
# Content
# --------------------------------------------------------------------------------------------------


def headline(evaluations: list[Evaluation]) -> dict[str, Any]:
    """Models as rows, data sets as column groups — the layout of the LLaVA-Med paper table."""
    datasets = list(dict.fromkeys(e.dataset for e in evaluations))
    names = [value.name for value in item_values() if value.headline is not None]
    rows: dict[str, dict[str, Any]] = {}
    for evaluation in evaluations:
        label = evaluation.model + (" (baseline)" if evaluation.role == "baseline" else "")
        overall = evaluation.scores["breakdown"].get("overall", {}).get("all", {})
        metrics = evaluation.scores["metrics"]
        cells = {}
        for name in names:
            family, metric = name.split(".")
            cell = dict(overall.get(name) or {"value": metrics.get(family, {}).get(metric), "ci_low": None,
                                               "ci_high": None, "n": None})
            cells[name] = cell
        cells["n"] = evaluation.scores["n"]
        rows.setdefault(label, {"model": label, "cells": {}})["cells"][evaluation.dataset] = cells
    return {"datasets": datasets, "metrics": names, "rows": list(rows.values())}


def _judgement(metric: Metric, item: dict[str, Any], of: str) -> float:
    """The family's 0–1 ``score`` or ``credit`` of an item, as its verdict names them."""
    return item[metric.name][getattr(metric.verdict, of)[item["answer_type"]]]


def worst_errors(items: list[dict[str, Any]], limit: int = WORST_ERRORS) -> list[dict[str, Any]]:
    """Items the model got most wrong: lowest strict score, then lowest parity score, answered first."""
    strict, parity = with_verdict("strict"), with_verdict("parity")
    wrong = [(index, item) for index, item in enumerate(items) if _judgement(strict, item, "score") < 1.0]
    wrong.sort(
        key=lambda pair: (
            _judgement(strict, pair[1], "score"),
            _judgement(parity, pair[1], "score"),
            pair[1]["prediction"] is None,
            pair[0],
        )
    )
    return [_gallery_row(item, _judgement(strict, item, "score"), _judgement(parity, item, "score"), strict)
            for _, item in wrong[:limit]]


def _gallery_row(item: dict[str, Any], strict: float, parity: float, judge: Metric) -> dict[str, Any]:
    # question id, texts and scores only: no file names (DICOM names can carry patient data)
    reason = judge.verdict.reason if judge.verdict else None
    return {
        "question_id": item["question_id"],
        "answer_type": item["answer_type"],
        "question": item["question"],
        "reference": item["reference"],
        "prediction": item["prediction"],
        "strict": strict,
        "parity": parity,
        "reason": item[judge.name].get(reason) if reason else None,
        "image": item.get("image"),
    }


def lenient_only(items: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    """Items the parity (lenient) family credits in full that the strict family does not."""
    strict, parity = with_verdict("strict"), with_verdict("parity")
    rows = [item for item in items if item["prediction"] is not None
            and _judgement(parity, item, "credit") == 1.0 and _judgement(strict, item, "credit") != 1.0]
    return len(rows), [_gallery_row(i, 0.0, 1.0, strict) for i in rows[:LENIENT_EXAMPLES]]


def comparisons(
    systems: list[Evaluation], baselines: list[Evaluation], n_boot: int, seed: int
) -> list[dict[str, Any]]:
    """Each system against the baseline(s) on the same data set, from their item rows; a comparison
    made by ``medvlm score --baseline`` is listed as it was computed."""
    result = []
    for system in systems:
        # a comparison made at scoring time is listed unless the same baseline is compared here again
        recomputed = {_predictions_file(b.scores) for b in baselines if b.dataset == system.dataset}
        embedded = system.scores.get("comparison")
        if embedded and str(embedded.get("baseline")) not in recomputed:
            result.append({"model": system.model, "dataset": system.dataset,
                           "baseline_model": Path(str(embedded["baseline"])).stem,
                           "source": "medvlm score --baseline", **embedded})
        for baseline in baselines:
            if baseline.dataset != system.dataset or baseline.path == system.path:
                continue
            entry = {"model": system.model, "dataset": system.dataset, "baseline_model": baseline.model,
                     "baseline": str(baseline.path), "source": "report --baseline"}
            if system.items is None or baseline.items is None:
                entry["error"] = "per-item rows (scores.items.jsonl) missing; cannot pair items"
            else:
                entry.update(paired_comparison(system.items, baseline.items, n_boot=n_boot, seed=seed,
                                               label=str(baseline.path)))
            result.append(entry)
    return result


def _predictions_file(scores: dict[str, Any]) -> str:
    return str((scores.get("provenance", {}).get("predictions") or {}).get("file"))


def _summarise_checksums(checksums: dict[str, str]) -> dict[str, Any]:
    """A short, name-free form: data file names can identify patients in some archives."""
    if len(checksums) <= 3:
        return checksums
    combined = hashlib.sha256(
        "".join(f"{k}\0{v}\n" for k, v in sorted(checksums.items())).encode()
    ).hexdigest()
    return {"files": len(checksums), "combined_sha256": combined}


def evaluation_entry(evaluation: Evaluation) -> dict[str, Any]:
    scores = evaluation.scores
    provenance = dict(scores.get("provenance", {}))
    if "data_checksums" in provenance:
        provenance["data_checksums"] = _summarise_checksums(provenance["data_checksums"])
    entry: dict[str, Any] = {
        "model": evaluation.model, "dataset": evaluation.dataset, "role": evaluation.role,
        "scores_file": str(evaluation.path), "n": scores["n"], "metrics": scores["metrics"],
        "breakdown": scores["breakdown"], "closed_confusion": scores.get("closed_confusion"),
        "missing_predictions": scores.get("missing_predictions", {"count": 0, "ids": []}),
        "input_problems": scores.get("input_problems", {"count": 0, "by_kind": {}, "examples": []}),
        "inferred_answer_types": scores.get("inferred_answer_types", 0), "provenance": provenance,
        "items_available": evaluation.items is not None,
    }
    if evaluation.items is not None:
        entry["worst_errors"] = worst_errors(evaluation.items)
        entry["lenient_only_count"], entry["lenient_only"] = lenient_only(evaluation.items)
    return entry


def continual_entry(path: Path, run: ContinualRecord) -> dict[str, Any]:
    return {"file": str(path), **run.model_dump()}


def method_summary(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and SD over seeds of each method's metrics (SD None with one seed)."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        by_method.setdefault(run["method"], []).append(run)
    summary = []
    for method, group in by_method.items():
        mean, sd = {}, {}
        for metric in CONTINUAL_METRICS:
            values = [r["metrics"].get(metric) for r in group if r["metrics"].get(metric) is not None]
            mean[metric] = statistics.fmean(values) if values else None
            sd[metric] = statistics.stdev(values) if len(values) > 1 else None
        summary.append({"method": method, "seeds": sorted(r["seed"] for r in group), "mean": mean, "sd": sd})
    return summary


# --------------------------------------------------------------------------------------------------
# Figures and output
# --------------------------------------------------------------------------------------------------


def _figures(entry: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {"breakdown": {}}
    for field_name, groups in entry["breakdown"].items():
        if field_name != "overall" and groups:
            figures["breakdown"][field_name] = plots.breakdown_bars(
                groups, f"{entry['dataset']}: by {field_name}"
            )
    confusion = entry.get("closed_confusion")
    if confusion:
        figures["confusion"] = plots.matrix_plot(
            confusion["matrix"], [f"reference {label}" for label in confusion["true_labels"]],
            confusion["predicted_labels"], "Closed yes/no questions: strict label read from the answer",
            xlabel="prediction", ylabel="reference")
    figures["thumbnails"] = [plots.thumbnail(row.get("image")) for row in entry.get("worst_errors", [])]
    return figures


def _continual_figures(run: dict[str, Any]) -> str:
    return plots.matrix_plot(run["accuracy"], ["initial", *(f"after {task}" for task in run["tasks"])],
                             run["probes"], f"{run['method']} (seed {run['seed']}): accuracy after each task",
                             xlabel="evaluated on", ylabel="model", fmt="{:.1f}", cmap="viridis", vmax=100.0)


def _environment() -> Environment:
    environment = Environment(
        loader=PackageLoader("medvlm.eval", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def pct(value: Any, digits: int = 2) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    def lines(text: str) -> Markup:
        return escape(text).replace("\n", Markup("<br>"))

    environment.filters["pct"] = pct
    environment.filters["lines"] = lines
    families = metrics()
    values = [value for metric in families for value in metric.values]
    environment.globals["metric_labels"] = {value.name: value.label for value in values}
    environment.globals["headline_headings"] = {value.name: value.headline for value in values if value.headline}
    environment.globals["metric_styles"] = {value.name: metric.style for metric in families for value in metric.values}
    return environment


def build_report(
    inputs: list[str | Path],
    output: str | Path,
    *,
    baseline: list[str | Path] | None = None,
    title: str | None = None,
    n_boot: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``output`` (HTML) and report.json beside it; return the report.json content.

    Neither may be one of the scores read; an existing one is replaced only when medvlm wrote it (a
    rerun) or with ``overwrite``.

    Paired comparisons use ``n_boot``/``seed``, by default the bootstrap settings the first system
    was scored with, so a report agrees with ``medvlm score --baseline`` on the same pair.
    """
    output = Path(output)
    if output.suffix.lower() == ".json":  # report.json goes beside the HTML: the two would be one file
        raise OutputError(f"{output}: the report's data is written beside the HTML as a .json file; give an .html "
                          "path for --output")
    systems, continual = collect(list(inputs))
    baselines, _ = collect(list(baseline or []), role="baseline") if baseline else ([], [])
    # a baseline inside an input run directory is shown once, as the baseline
    baseline_digests = {_digest(b.scores) for b in baselines}
    systems = [s for s in systems if _digest(s.scores) not in baseline_digests]
    if not systems and not continual:
        raise DataError("nothing to report: no scores.json or continual.json in the inputs")
    read = [e.path for e in (*systems, *baselines)] + [path for path, _ in continual]
    for written in (output, output.with_suffix(".json")):  # a report over its own scores.json replaced it
        check_new_output(written, inputs=read, overwrite=overwrite)
    settings = systems[0].scores.get("provenance", {}).get("bootstrap", {}) if systems else {}
    n_boot = settings.get("samples", 1000) if n_boot is None else n_boot
    seed = settings.get("seed", 0) if seed is None else seed
    entries = [evaluation_entry(e) for e in systems]
    baseline_entries = [evaluation_entry(e) for e in baselines]
    continual_runs = [continual_entry(path, run) for path, run in continual]
    report: dict[str, Any] = {
        "title": title or "medvlm evaluation report",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "medvlm_version": medvlm.__version__, "git_commit": git_commit(),
        "headline": headline([*systems, *baselines]),
        "entries": entries, "baselines": baseline_entries,
        "comparisons": comparisons(systems, baselines, n_boot, seed),
        "continual": continual_runs, "continual_methods": method_summary(continual_runs),
        "item_metrics": [value.name for value in item_values()], "json_file": str(output.with_suffix(".json")),
    }
    figures = {
        "entries": [_figures(entry) for entry in entries],
        "continual": [_continual_figures(run) for run in continual_runs],
        "sweeps": [plots.ratio_sweeps(run["ratio_sweeps"], f"{run['method']} (seed {run['seed']}): SAC ratio per "
                                      "task — validation score and general retention vs r")
                   if run.get("ratio_sweeps") else None for run in continual_runs],
        # general retention is a ratio, not percent: it stays in the table, off the percent axis
        "methods": plots.method_bars(report["continual_methods"], [m for m in CONTINUAL_METRICS
                                                                   if m != "general_retention"],
                                     "Continual-learning metrics by method (percent)")
        if len({run["method"] for run in continual_runs}) > 1 or len(continual_runs) > 1 else None,
    }
    html = _environment().get_template("report.html.j2").render(report=report, figures=figures)
    write_text(output, html)
    write_json(output.with_suffix(".json"), report)
    record_written(output, output.with_suffix(".json"))
    return report
