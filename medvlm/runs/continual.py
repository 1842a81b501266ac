"""Guarded sequences: tasks trained one after another under a continual method, forgetting measured.

Two kinds of recipe run through the one loop here (:func:`run_sequence`): a continual recipe's task
list (three VQA skills in a row), and a pipeline recipe with a ``continual:`` section, whose stages
from ``continual.tasks_from`` on are the tasks (LLaVA-Med's curriculum — align → instruct →
finetune — guarded against forgetting; :mod:`medvlm.runs.pipeline`).

For each task t (METHODS.md §5): the method's guards prepare the task (a frozen teacher θ_{t−1},
inquiries, replayed samples, loss plugins) → the task trains from θ_{t−1} as one stage (LoRA merged
into θ̂_t) → the consolidator, if any, turns (θ_{t−1}, θ̂_t) into θ_t, on the tensors of the
components the stage trained only (an alignment stage's projector), from the adapter's exact
factors after a LoRA stage, with SAC's ratio chosen on held-out data when it is ``auto``
(:mod:`medvlm.runs.ratio`) → guards record what they need (EWC's Fisher) → every probe is
evaluated. A task's ``guards`` turn components off for it or change its SAC settings. The initial
model is evaluated first (row 0), so the accuracy matrix has T + 1 rows.

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
import random
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
from medvlm.data.records import Sample
from medvlm.errors import DataError, RecipeError
from medvlm.eval.run import evaluate_model
from medvlm.io import read_json, write_json
from medvlm.model.build import trainable_components
from medvlm.model.prompting import TrainedPrompt
from medvlm.provenance import provenance
from medvlm.recipe import (
    ContinualSpec,
    ContinualTaskSpec,
    DataSpec,
    EvalSpec,
    ModelSpec,
    Recipe,
    SourceSpec,
    TaskGuards,
    apply_overrides,
    validate,
)
from medvlm.rundir import CONSOLIDATION, ContinualDir, StageDir, TaskDir
from medvlm.train.outputs import claim_output_dir
from medvlm.train.saving import save_final_model
from medvlm.train.stage import run_stage

log = logging.getLogger("medvlm")


@dataclass
class ContinualResult:
    output_dir: Path
    record: dict[str, Any]  # the content of continual.json (a ContinualRecord)


@dataclass
class SequenceTask:
    """One task of a guarded sequence: a continual recipe's task, or a guarded pipeline's stage."""

    name: str
    stage: Recipe  # its stage recipe; model and output are set when it runs (θ_{t−1}, its directory)
    guards: TaskGuards
    eval: list[SourceSpec]  # the task's own probe set (may be empty for a pipeline stage)

    def retarget(self, previous_model: Path, out: Path) -> Recipe:
        """The stage recipe training from ``previous_model`` into ``out``."""
        tree = self.stage.model_dump(mode="json")
        tree["model"].update(path=str(previous_model), preset=None)
        tree["output"] = {"dir": str(out), "overwrite": False}
        return validate(tree, f"{self.stage.source_file or 'recipe'} (task '{self.name}')")


@dataclass
class Sequence:
    """A guarded sequence: the continual section that governs it, its tasks, and how probes are run."""

    spec: ContinualSpec
    tasks: list[SequenceTask]
    output_dir: Path
    probe_eval: EvalSpec  # batch size, decoding and prompt style of the probes
    probe_data: DataSpec  # template, system prompt and image handling of the probes
    seed: int
    source_file: str | None = None

    @property
    def layout(self) -> ContinualDir:
        return ContinualDir(self.output_dir)

    @property
    def per_task_probes(self) -> bool:
        """Every task has its own probe set, so the task metrics (Last, BWT, ...) are defined."""
        return all(task.eval for task in self.tasks)

    def probe_sets(self) -> list[tuple[str, list[SourceSpec]]]:
        """Every task's evaluation set in task order (when all have one), then the extra probes."""
        own = [(task.name, task.eval) for task in self.tasks] if self.per_task_probes else []
        return own + [(probe.name, probe.eval) for probe in self.spec.probes]


def task_stage(recipe: Recipe, task: ContinualTaskSpec) -> Recipe:
    """The stage recipe of one task of a continual recipe: the run's settings, the task's data, the
    task's overrides."""
    tree = recipe.model_dump(mode="json")
    tree.pop("continual")
    tree["stages"] = []
    tree["name"] = f"{recipe.name}-{task.name}"
    tree["data"]["train"] = [spec.model_dump(mode="json") for spec in task.train]
    tree = apply_overrides(tree, task.overrides)
    return validate(tree, f"{recipe.source_file or 'recipe'} (continual task '{task.name}')")


def sequence_of(recipe: Recipe) -> Sequence:
    """The guarded sequence a continual recipe describes."""
    spec = recipe.continual
    if spec is None:
        raise RecipeError(f"{recipe.source_file or 'recipe'}: no 'continual' section")
    tasks = [SequenceTask(task.name, task_stage(recipe, task), task.guards, task.eval) for task in spec.tasks]
    return Sequence(spec, tasks, recipe.output_dir, recipe.eval, recipe.data, recipe.train.seed,
                    recipe.source_file)


def evaluate_row(sequence: Sequence, model_dir: Path, out: Path) -> list[float]:
    """Accuracy (percent, see :mod:`medvlm.continual.metrics`) of one model on every probe."""
    row = []
    data = sequence.probe_data
    for name, sources in sequence.probe_sets():
        spec = sequence.probe_eval.model_copy(update={"datasets": sources})
        scores = evaluate_model(model_dir, spec, out / name, template=data.template,
                                system_prompt=data.system_prompt, image_aspect_ratio=data.image_aspect_ratio)
        row.append(probe_accuracy(list(scores.values())))
    return row


def method_components(sequence: Sequence, recipe: Recipe) -> tuple[str | None, list[tuple[str, Guard]]]:
    """The method's consolidator name and its guards, built (and so validated) before any training."""
    consolidator, guards = None, []
    for name in sequence.spec.components:
        if is_consolidator(name):
            consolidator = name
        else:
            guards.append((name, get_guard(name)(recipe)))  # unknown names fail here, with a hint
    return consolidator, guards


def initial_model(model: ModelSpec, data: DataSpec, layout: ContinualDir, origin: str | None) -> Path:
    """θ_0: the model directory the first task starts from (a tiny preset is built and saved once)."""
    if model.path:
        return Path(model.path)
    if not model.preset:
        raise RecipeError(f"{origin or 'recipe'}: the continual run names no initial model "
                          "(model.path or model.preset)")
    out = layout.initial
    if not out.complete:
        from medvlm.model.build import load_model

        loaded, processor = load_model(model, template=data.template)
        save_final_model(loaded, processor, TrainedPrompt.of(data), out)
    return out.model


def run_continual(recipe: Recipe, *, resume: bool = False) -> ContinualResult:
    """Run (or continue) a continual recipe's task sequence; returns the ``continual.json`` record."""
    with claim(recipe.output_dir):  # one run at a time in an output directory (medvlm.claims)
        return _run_continual(recipe, resume=resume)


def _run_continual(recipe: Recipe, *, resume: bool) -> ContinualResult:
    sequence = sequence_of(recipe)
    if not sequence.tasks:
        raise RecipeError(f"{recipe.source_file or 'recipe'}: continual.tasks lists no task")
    consolidator, guards = method_components(sequence, recipe)
    claim_output_dir(recipe.output_dir, recipe, "continual run")
    initial = initial_model(recipe.model, recipe.data, sequence.layout, recipe.source_file)
    record = run_sequence(sequence, initial, consolidator, guards, resume=resume)
    return ContinualResult(recipe.output_dir, record.model_dump(mode="json"))


def run_sequence(sequence: Sequence, initial: Path, consolidator: str | None, guards: list[tuple[str, Guard]],
                 *, resume: bool = False) -> ContinualRecord:
    """Train every task from θ_0 = ``initial`` in turn (complete tasks are skipped), evaluate every probe
    after each, and write ``continual.json``."""
    spec, layout = sequence.spec, sequence.layout
    write_json(layout.provenance, provenance(recipe=sequence.source_file))
    probes = [name for name, _ in sequence.probe_sets()]
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    accuracy = [evaluate_row(sequence, initial, layout.initial_eval)]
    seconds["eval:initial"] = round(time.perf_counter() - started, 2)
    log.info("initial model %s: %s", initial, dict(zip(probes, accuracy[0], strict=True)))

    samples_cache: dict[int, list[Sample]] = {}

    def read_task_samples(k: int) -> list[Sample]:
        if k not in samples_cache:
            data = sequence.tasks[k - 1].stage.data
            samples_cache[k], _ = read_samples(data.train, policy=data.on_bad_record,
                                               prompt_style=data.prompt_style, image_check=data.image_check)
        return samples_cache[k]

    previous, done_dirs, tasks_record, sweeps = initial, [], [], {}
    for index, task in enumerate(sequence.tasks, start=1):
        directory = layout.task(index, task.name)
        marker = directory.record
        if marker.is_file():
            record = read_json(marker)
            log.info("task %d (%s): already complete", index, task.name)
        else:
            record = _run_task(sequence, index, task, previous, initial, directory, done_dirs, consolidator,
                               guards, read_task_samples, resume)
            write_json(marker, record)
        accuracy.append(record["accuracy"])
        tasks_record.append({k: v for k, v in record.items() if k != "accuracy"})
        seconds.update({f"{task.name}:{k}": v for k, v in record["seconds"].items()})
        sweep = (record.get("consolidation") or {}).get("ratio_sweep")
        if sweep:
            sweeps[task.name] = sweep
        previous = Path(record["model"])
        done_dirs.append(directory.root)

    general = probes.index(spec.general_probe) if spec.general_probe in probes else None
    result = ContinualRecord(
        method=spec.method,
        seed=sequence.seed,
        tasks=[task.name for task in sequence.tasks],
        probes=probes,
        accuracy=accuracy,
        metrics=continual_metrics(accuracy, len(sequence.tasks), general, per_task=sequence.per_task_probes),
        ratio_sweeps=sweeps,
        provenance={**provenance(recipe=sequence.source_file), "initial_model": str(initial),
                    "accuracy_definition": ACCURACY_DEFINITION, "general_probe": spec.general_probe,
                    "output_dir": str(sequence.output_dir), "seconds": seconds, "tasks": tasks_record},
    )
    result.write(layout.record)
    log.info("continual run (%s): %s", spec.method, result.metrics)
    return result


def held_out_ids(samples: list[Sample], count: int, seed: int, task: str) -> list[str]:
    """The ids of a task's validation slice: ``count`` training samples drawn by a seeded generator
    (the same on a rerun), which the task then does not train on."""
    ids = sorted({sample.id for sample in samples})
    random.Random(f"sac-validation-{seed}-{task}").shuffle(ids)
    return sorted(ids[: min(count, len(ids) // 2)])


def _run_task(sequence: Sequence, index: int, task: SequenceTask, previous: Path, initial: Path,
              directory: TaskDir, earlier: list[Path], consolidator: str | None, guards: list[tuple[str, Guard]],
              read_task_samples, resume: bool) -> dict[str, Any]:
    """Train, consolidate, finish guards and evaluate one task; returns its task.json record."""
    seconds: dict[str, float] = {}
    train_dir: StageDir = directory.train
    stage = task.retarget(previous, train_dir.root)
    active = [(name, guard) for name, guard in guards if name not in task.guards.skip]
    consolidator = None if consolidator in task.guards.skip else consolidator
    sac = sequence.spec.sac_for(task.guards)
    auto = consolidator == "sac" and sac.ratio == "auto"
    samples = read_task_samples(index)
    validation = held_out_ids(samples, sac.auto.validation_samples, sequence.seed, task.name) if auto else []
    if auto and not validation and not (directory.model / CONSOLIDATION).is_file():  # say so before training
        raise DataError(f"{task.stage.source_file or 'recipe'} (task '{task.name}'): sac.ratio auto needs a "
                        f"validation slice held out of the task's training data, but its {len(samples)} "
                        "sample(s) leave none (at least two distinct ids are needed)")
    context = TaskContext(spec=sequence.spec, index=index, name=task.name, stage=stage, previous_model=previous,
                          task_dir=directory.root, earlier_task_dirs=list(earlier),
                          samples=[s for s in samples if s.id not in set(validation)],
                          read_task_samples=read_task_samples, seed=sequence.seed)
    sweep = None
    if auto and not (directory.model / CONSOLIDATION).is_file():
        from medvlm.runs.ratio import RatioSweep

        probes = [source for _, sources in sequence.probe_sets() for source in sources]
        sweep = RatioSweep(sac.auto, stage, sequence.probe_eval, sequence.probe_data, initial,
                           sequence.layout.initial_eval, probes)
        sweep.general_samples(context.samples)  # a general set that overlaps is refused before training
    directory.root.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    guard_reports: dict[str, Any] = {}
    if train_dir.complete:
        log.info("task %d (%s): training already finished", index, task.name)
        if train_dir.summary.is_file():
            summary = read_json(train_dir.summary)
    else:
        plugins, extra = [], []
        for name, guard in active:
            parts = guard.prepare(context)
            plugins.extend(parts.plugins)
            extra.extend(parts.extra_samples)
            guard_reports[name] = parts.report
        log.info("task %d (%s): training from %s with %d extra sample(s), %d held out, plugins %s", index,
                 task.name, previous, len(extra), len(validation), [p.name for p in plugins] or "none")
        started = time.perf_counter()
        summary = run_stage(stage, resume=resume, loss_plugins=plugins, extra_samples=extra,
                            held_out=set(validation)).summary
        seconds["train"] = round(time.perf_counter() - started, 2)
        del plugins, extra  # the loss plugins hold the teacher: drop them so release_teacher frees it
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
            components = trainable_components(stage)
            if sweep is not None:
                held = [s for s in samples if s.id in set(validation)]
                consolidation = sweep.consolidate(previous, current, model_dir, components, held, context.samples)
            else:
                config = ConsolidationConfig(ratio=float(sac.ratio), alpha=sequence.spec.mix.alpha,
                                             settings=sequence.spec.settings(consolidator))
                consolidation = consolidate_checkpoints(consolidator, previous, current, model_dir, config,
                                                        components=components)
            seconds["consolidate"] = round(time.perf_counter() - started, 2)
    for _, guard in active:
        guard.finish(context, model_dir)

    started = time.perf_counter()
    row = evaluate_row(sequence, model_dir, directory.eval)
    seconds["eval"] = round(time.perf_counter() - started, 2)
    log.info("task %d (%s): accuracy %s", index, task.name, row)
    train = {k: summary.get(k) for k in ("global_step", "train_loss", "wall_seconds", "samples")}
    return {"task": task.name, "index": index, "model": str(model_dir), "trained_model": str(trained),
            "accuracy": row, "train": train, "guards": guard_reports, "skip": list(task.guards.skip),
            "held_out": len(validation), "consolidation": consolidation, "seconds": seconds}
