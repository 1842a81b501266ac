"""Continual-learning runs: a task sequence trained under one method, with forgetting measured.

For each task t (METHODS.md §5): the method's guards prepare the task (a frozen teacher θ_{t−1},
inquiries, replayed samples, loss plugins) → the task trains from θ_{t−1} as one stage (LoRA merged
into θ̂_t) → the consolidator, if any, turns (θ_{t−1}, θ̂_t) into θ_t (from a LoRA stage it reads the
adapter's exact factors) → guards record what they need (EWC's Fisher) → every probe is evaluated.
The initial model is evaluated first (row 0), so the accuracy matrix has T + 1 rows.

Output layout (``OUT`` = the recipe's output.dir; names in :class:`medvlm.rundir.ContinualDir`)::

    OUT/recipe.resolved.yaml, OUT/provenance.json
    OUT/eval/initial/<probe>/<dataset>/   answers.jsonl + scores.json of the initial model (row 0)
    OUT/tasks/NN-<task>/train/            the task's stage (model/ = θ̂_t; adapter/ for LoRA stages)
    OUT/tasks/NN-<task>/model/            θ_t, when a consolidator made one (else θ_t = train/model)
    OUT/tasks/NN-<task>/eval/<probe>/     row t
    OUT/tasks/NN-<task>/task.json         written last: the task is complete
    OUT/continual.json                    :class:`medvlm.continual.record.ContinualRecord`

A rerun skips complete tasks, finished stages and answered questions; ``resume=True`` also
continues a stage interrupted mid-training from its latest checkpoint.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.claims import claim
from medvlm.continual import ConsolidationConfig, Guard, TaskContext, get_guard, is_consolidator
from medvlm.continual.checkpoints import consolidate_checkpoints
from medvlm.continual.metrics import ACCURACY_DEFINITION, continual_metrics, probe_accuracy
from medvlm.continual.record import ContinualRecord
from medvlm.data.reading import read_samples
from medvlm.errors import RecipeError
from medvlm.eval.run import evaluate_model
from medvlm.io import read_json, write_json
from medvlm.model.prompting import TrainedPrompt
from medvlm.provenance import provenance
from medvlm.recipe import ContinualTaskSpec, Recipe, SourceSpec, apply_overrides, validate
from medvlm.rundir import CONSOLIDATION, ContinualDir, StageDir, TaskDir
from medvlm.train.outputs import claim_output_dir
from medvlm.train.saving import save_final_model
from medvlm.train.stage import run_stage

log = logging.getLogger("medvlm")


@dataclass
class ContinualResult:
    output_dir: Path
    record: dict[str, Any]  # the content of continual.json (a ContinualRecord)


def task_dir(recipe: Recipe, index: int, task: ContinualTaskSpec) -> TaskDir:
    return ContinualDir(recipe.output_dir).task(index, task.name)


def task_stage(recipe: Recipe, task: ContinualTaskSpec, previous_model: Path, out: Path) -> Recipe:
    """The stage recipe of one task: the run's settings, the task's data, the task's overrides."""
    tree = recipe.model_dump(mode="json")
    tree.pop("continual")
    tree["stages"] = []
    tree["name"] = f"{recipe.name}-{task.name}"
    tree["data"]["train"] = [spec.model_dump(mode="json") for spec in task.train]
    tree["model"].update(path=str(previous_model), preset=None)
    tree["output"] = {"dir": str(out), "overwrite": False}
    tree = apply_overrides(tree, task.overrides)
    return validate(tree, f"{recipe.source_file or 'recipe'} (continual task '{task.name}')")


def probe_sets(recipe: Recipe) -> list[tuple[str, list[SourceSpec]]]:
    """Every task's evaluation set in task order, then the extra probes (the general probe)."""
    assert recipe.continual is not None
    return ([(task.name, task.eval) for task in recipe.continual.tasks]
            + [(probe.name, probe.eval) for probe in recipe.continual.probes])


def evaluate_row(recipe: Recipe, model_dir: Path, out: Path) -> list[float]:
    """Accuracy (percent, see :mod:`medvlm.continual.metrics`) of one model on every probe."""
    row = []
    for name, sources in probe_sets(recipe):
        spec = recipe.eval.model_copy(update={"datasets": sources})
        scores = evaluate_model(model_dir, spec, out / name, template=recipe.data.template,
                                system_prompt=recipe.data.system_prompt,
                                image_aspect_ratio=recipe.data.image_aspect_ratio)
        row.append(probe_accuracy(list(scores.values())))
    return row


def _components(recipe: Recipe) -> tuple[str | None, list[tuple[str, Guard]]]:
    """The method's consolidator name and its guards, built (and so validated) before any training."""
    assert recipe.continual is not None
    consolidator, guards = None, []
    for name in recipe.continual.components:
        if is_consolidator(name):
            consolidator = name
        else:
            guards.append((name, get_guard(name)(recipe)))  # unknown names fail here, with a hint
    return consolidator, guards


def _initial_model(recipe: Recipe) -> Path:
    if recipe.model.path:
        return Path(recipe.model.path)
    if not recipe.model.preset:
        raise RecipeError(f"{recipe.source_file or 'recipe'}: the continual run names no initial model "
                          "(model.path or model.preset)")
    out = ContinualDir(recipe.output_dir).initial
    if not out.complete:
        from medvlm.model.build import load_model

        model, processor = load_model(recipe.model, template=recipe.data.template)
        save_final_model(model, processor, TrainedPrompt.of(recipe.data), out)
    return out.model


def _consolidation_config(recipe: Recipe, consolidator: str) -> ConsolidationConfig:
    assert recipe.continual is not None
    return ConsolidationConfig(ratio=recipe.continual.sac.ratio, alpha=recipe.continual.mix.alpha,
                               settings=recipe.continual.settings(consolidator))


def run_continual(recipe: Recipe, *, resume: bool = False) -> ContinualResult:
    """Run (or continue) the task sequence; returns the ``continual.json`` record."""
    with claim(recipe.output_dir):  # one run at a time in an output directory (medvlm.claims)
        return _run_continual(recipe, resume=resume)


def _run_continual(recipe: Recipe, *, resume: bool) -> ContinualResult:
    spec = recipe.continual
    if spec is None:
        raise RecipeError(f"{recipe.source_file or 'recipe'}: no 'continual' section")
    consolidator, guards = _components(recipe)
    out, layout = recipe.output_dir, ContinualDir(recipe.output_dir)
    claim_output_dir(out, recipe, "continual run")
    write_json(layout.provenance, provenance(recipe=recipe.source_file))
    probes = [name for name, _ in probe_sets(recipe)]
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    initial = _initial_model(recipe)
    accuracy = [evaluate_row(recipe, initial, layout.initial_eval)]
    seconds["eval:initial"] = round(time.perf_counter() - started, 2)
    log.info("initial model %s: %s", initial, dict(zip(probes, accuracy[0], strict=True)))

    samples_cache: dict[int, list] = {}

    def read_task_samples(k: int) -> list:
        if k not in samples_cache:
            data = recipe.data
            samples_cache[k], _ = read_samples(spec.tasks[k - 1].train, policy=data.on_bad_record,
                                               prompt_style=data.prompt_style, image_check=data.image_check)
        return samples_cache[k]

    previous, done_dirs, tasks_record = initial, [], []
    for index, task in enumerate(spec.tasks, start=1):
        directory = task_dir(recipe, index, task)
        marker = directory.record
        if marker.is_file():
            record = read_json(marker)
            log.info("task %d (%s): already complete", index, task.name)
        else:
            record = _run_task(recipe, index, task, previous, directory, done_dirs, consolidator, guards,
                               read_task_samples, resume)
            write_json(marker, record)
        accuracy.append(record["accuracy"])
        tasks_record.append({k: v for k, v in record.items() if k != "accuracy"})
        seconds.update({f"{task.name}:{k}": v for k, v in record["seconds"].items()})
        previous = Path(record["model"])
        done_dirs.append(directory.root)

    general = probes.index(spec.general_probe) if spec.general_probe in probes else None
    result = ContinualRecord(
        method=spec.method,
        seed=recipe.train.seed,
        tasks=[task.name for task in spec.tasks],
        probes=probes,
        accuracy=accuracy,
        metrics=continual_metrics(accuracy, len(spec.tasks), general),
        provenance={**provenance(recipe=recipe.source_file), "initial_model": str(initial),
                    "accuracy_definition": ACCURACY_DEFINITION, "general_probe": spec.general_probe,
                    "output_dir": str(out), "seconds": seconds, "tasks": tasks_record},
    )
    result.write(layout.record)
    log.info("continual run %s (%s): %s", recipe.name, spec.method, result.metrics)
    return ContinualResult(out, result.model_dump(mode="json"))


def _run_task(recipe: Recipe, index: int, task: ContinualTaskSpec, previous: Path, directory: TaskDir,
              earlier: list[Path], consolidator: str | None, guards: list[tuple[str, Guard]],
              read_task_samples, resume: bool) -> dict[str, Any]:
    """Train, consolidate, finish guards and evaluate one task; returns its task.json record."""
    assert recipe.continual is not None
    seconds: dict[str, float] = {}
    train_dir: StageDir = directory.train
    stage = task_stage(recipe, task, previous, train_dir.root)
    context = TaskContext(spec=recipe.continual, index=index, task=task, stage=stage, previous_model=previous,
                          task_dir=directory.root, earlier_task_dirs=list(earlier),
                          samples=read_task_samples(index), read_task_samples=read_task_samples,
                          seed=recipe.train.seed)
    directory.root.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    guard_reports: dict[str, Any] = {}
    if train_dir.complete:
        log.info("task %d (%s): training already finished", index, task.name)
        if train_dir.summary.is_file():
            summary = read_json(train_dir.summary)
    else:
        plugins, extra = [], []
        for name, guard in guards:
            parts = guard.prepare(context)
            plugins.extend(parts.plugins)
            extra.extend(parts.extra_samples)
            guard_reports[name] = parts.report
        log.info("task %d (%s): training from %s with %d extra sample(s), plugins %s", index, task.name,
                 previous, len(extra), [p.name for p in plugins] or "none")
        started = time.perf_counter()
        summary = run_stage(stage, resume=resume, loss_plugins=plugins, extra_samples=extra).summary
        seconds["train"] = round(time.perf_counter() - started, 2)
    context.release_teacher()  # the Trainer and its plugins are gone: free the teacher before evaluation
    gc.collect()

    trained = train_dir.model
    model_dir, consolidation = trained, None
    if consolidator is not None:
        model_dir = directory.model
        if (model_dir / CONSOLIDATION).is_file():  # consolidated before an interruption
            saved = read_json(model_dir / CONSOLIDATION)
            consolidation = {k: v for k, v in saved.items() if k != "tensors"}
        else:
            started = time.perf_counter()
            current = train_dir.adapter if train_dir.adapter.is_dir() else trained
            consolidation = consolidate_checkpoints(consolidator, previous, current, model_dir,
                                                    _consolidation_config(recipe, consolidator))
            seconds["consolidate"] = round(time.perf_counter() - started, 2)
    for _, guard in guards:
        guard.finish(context, model_dir)

    started = time.perf_counter()
    row = evaluate_row(recipe, model_dir, directory.eval)
    seconds["eval"] = round(time.perf_counter() - started, 2)
    log.info("task %d (%s): accuracy %s", index, task.name, row)
    train = {k: summary.get(k) for k in ("global_step", "train_loss", "wall_seconds", "samples")}
    return {"task": task.name, "index": index, "model": str(model_dir), "trained_model": str(trained),
            "accuracy": row, "train": train, "guards": guard_reports, "consolidation": consolidation,
            "seconds": seconds}

