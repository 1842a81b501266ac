"""Several stages in sequence, each starting from the previous stage's model, then evaluation.

A pipeline recipe lists its stages (each a stage recipe file plus overrides) and an ``eval``
section. Stage outputs go to ``OUT/<stage name>/``; a stage whose ``model/`` exists is complete and
is skipped when the pipeline runs again, so an interrupted pipeline continues where it stopped.

The pipeline's own ``model`` section, when it names a path or preset, is where the first stage
starts (the demo starts LLaVA-Med's stages from the shipped general base this way); otherwise the
first stage's recipe says. A ``model.family`` other than auto there applies to every stage
(``medvlm pipeline P.yaml model.family=gemma3``). It is part of the pipeline's resolved recipe, so an
output directory is never reused for a pipeline that starts from another model.

A pipeline recipe with a ``continual:`` section is *guarded*: its stages from
``continual.tasks_from`` on (default: all) run as the tasks of a continual sequence, so LLaVA-Med's
curriculum can adapt a general model with SAC, UIR or any other method: each stage's teacher is the
model before it, each stage's update is consolidated against it (on the components the stage trains),
every probe is evaluated after every stage, and ``OUT/continual.json`` records it all. Those stages
live under ``OUT/tasks/NN-<stage>/`` (:class:`medvlm.rundir.ContinualDir`); a stage's ``guards``
turn a component off for it (``{skip: [uir]}``) or change its SAC settings, and its ``eval`` names its
own probe set.

Command-line overrides address the pipeline (``eval.batch_size=8``), one stage
(``align.train.max_steps=5``) or every stage (``*.train.max_steps=5``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medvlm.claims import claim
from medvlm.errors import RecipeError
from medvlm.eval.run import evaluate_model
from medvlm.io import write_json
from medvlm.provenance import provenance
from medvlm.recipe import Recipe, apply_overrides, load_tree, parse_override, resolve, set_dotted
from medvlm.rundir import PipelineDir
from medvlm.runs.continual import Sequence, SequenceTask, initial_model, method_components, run_sequence
from medvlm.train.outputs import claim_output_dir
from medvlm.train.stage import run_stage

log = logging.getLogger("medvlm")


@dataclass
class Pipeline:
    recipe: Recipe
    stages: list[tuple[str, Recipe]]

    @property
    def output_dir(self) -> Path:
        return self.recipe.output_dir

    @property
    def layout(self) -> PipelineDir:
        return PipelineDir(self.output_dir)


@dataclass
class PipelineResult:
    output_dir: Path
    stage_seconds: dict[str, float] = field(default_factory=dict)
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)
    continual: dict[str, Any] | None = None  # a guarded pipeline's continual.json


def task_start(pipeline: Pipeline) -> int | None:
    """Index of the first stage that is a task of a guarded pipeline (None: the pipeline is not guarded)."""
    spec = pipeline.recipe.continual
    if spec is None:
        return None
    names = [name for name, _ in pipeline.stages]
    return names.index(spec.tasks_from) if spec.tasks_from else 0


def guarded_sequence(pipeline: Pipeline) -> Sequence:
    """The stages from ``continual.tasks_from`` on as the tasks of a guarded sequence; probes are answered
    with the last stage's template (the template the adapted model is used with)."""
    spec, first = pipeline.recipe.continual, task_start(pipeline)
    assert spec is not None and first is not None
    refs = {ref.name: ref for ref in pipeline.recipe.stages}
    tasks = [SequenceTask(name, stage, refs[name].guards, refs[name].eval) for name, stage in pipeline.stages[first:]]
    last = pipeline.stages[-1][1]
    return Sequence(spec, tasks, pipeline.output_dir, pipeline.recipe.eval, last.data, tasks[0].stage.train.seed,
                    pipeline.recipe.source_file)


def _split_overrides(overrides: list[str], stage_names: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    own: list[str] = []
    per_stage: dict[str, list[str]] = {name: [] for name in stage_names}
    for text in overrides:
        head, _, rest = text.partition(".")
        if head == "*":
            for name in stage_names:
                per_stage[name].append(rest)
        elif head in stage_names:
            per_stage[head].append(rest)
        else:
            own.append(text)
    return own, per_stage


def _record_stage_overrides(tree: dict[str, Any], per_stage: dict[str, list[str]]) -> None:
    """Command-line overrides of a stage join that stage's ``overrides`` in the pipeline's own tree (last,
    so they win), so they are part of the pipeline's resolved recipe: a rerun with other stage settings
    is then a different recipe, never a silent reuse of the stages finished with the old ones."""
    for stage in tree.get("stages") or []:
        name = stage.get("name") if isinstance(stage, dict) else None
        texts = per_stage.get(name) if isinstance(name, str) else None
        if texts:
            merged = dict(stage.get("overrides") or {})
            for text in texts:
                keys, value = parse_override(text)
                merged[".".join(keys)] = value
            stage["overrides"] = merged


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> Pipeline:
    """Resolve the pipeline recipe and every stage recipe up front, so errors surface before training."""
    path = Path(path)
    raw = load_tree(path)
    names = [stage.get("name") for stage in raw.get("stages", []) if isinstance(stage, dict)]
    own, per_stage = _split_overrides(overrides or [], {n for n in names if isinstance(n, str)})
    tree = load_tree(path, own)
    _record_stage_overrides(tree, per_stage)
    tree.setdefault("source_file", str(path.resolve()))
    recipe = resolve(tree, str(path), {"recipe_dir": str(path.resolve().parent)})
    if not recipe.stages:
        raise RecipeError(f"{path}: a pipeline recipe needs a 'stages' list")
    repeated = sorted({ref.name for ref in recipe.stages if [r.name for r in recipe.stages].count(ref.name) > 1})
    if repeated:  # OUT/<name> would hold both, and the second would be skipped as "already complete"
        raise RecipeError(f"{path}: key 'stages': stage names must be unique; repeated: {', '.join(repeated)}")
    out = recipe.output_dir
    stages: list[tuple[str, Recipe]] = []
    previous: str | None = None
    for ref in recipe.stages:
        stage_path = path.resolve().parent / ref.recipe
        stage_tree = apply_overrides(load_tree(stage_path), ref.overrides)
        set_dotted(stage_tree, ["output", "dir"], str(out / ref.name))
        if previous is not None:
            set_dotted(stage_tree, ["model", "path"], str(PipelineDir(out).stage(previous).model))
            set_dotted(stage_tree, ["model", "preset"], None)
        elif recipe.model.path or recipe.model.preset:
            set_dotted(stage_tree, ["model", "path"], recipe.model.path)
            set_dotted(stage_tree, ["model", "preset"], recipe.model.preset)
        if recipe.model.family != "auto":  # one architecture through the curriculum
            set_dotted(stage_tree, ["model", "family"], recipe.model.family)
        stage_tree["source_file"] = str(stage_path)
        origin = f"{stage_path} (stage '{ref.name}' of {path})"
        stages.append((ref.name, resolve(stage_tree, origin, {"output_dir": str(out),
                                                              "recipe_dir": str(stage_path.parent)})))
        previous = ref.name
    unknown = set(recipe.eval.stages) - {name for name, _ in stages}
    if unknown:
        raise RecipeError(f"{path}: eval.stages names unknown stage(s) {sorted(unknown)}")
    return Pipeline(recipe, stages)


def run_pipeline(pipeline: Pipeline, *, resume: bool = False) -> PipelineResult:
    """Run every stage (skipping finished ones), then evaluate. In a guarded pipeline the stages from
    ``continual.tasks_from`` on run as the tasks of a guarded sequence (:mod:`medvlm.runs.continual`):
    each a task with its teacher, consolidation and probes, recorded in ``continual.json``."""
    with claim(pipeline.output_dir):  # one run at a time in an output directory (medvlm.claims)
        return _run_pipeline(pipeline, resume=resume)


def _run_pipeline(pipeline: Pipeline, *, resume: bool) -> PipelineResult:
    out, layout = pipeline.output_dir, pipeline.layout
    first = task_start(pipeline)
    sequence, components = None, None
    if first is not None:  # build (and so validate) the guards before anything trains
        sequence = guarded_sequence(pipeline)
        components = method_components(sequence, pipeline.recipe)
    claim_output_dir(out, pipeline.recipe, "pipeline run")
    write_json(layout.provenance, provenance(recipe=pipeline.recipe.source_file))
    result = PipelineResult(out)
    models = {name: layout.stage(name).model for name, _ in pipeline.stages}
    for name, stage in pipeline.stages[:first]:
        if layout.stage(name).complete:
            log.info("stage %s: already complete, skipping", name)
            continue
        log.info("stage %s (%s): starting", name, stage.train.stage)
        started = time.perf_counter()
        run_stage(stage, resume=resume)
        result.stage_seconds[name] = round(time.perf_counter() - started, 2)
        log.info("stage %s: done in %.1f s", name, result.stage_seconds[name])
    if sequence is not None and components is not None:
        started = time.perf_counter()
        first_stage = sequence.tasks[0].stage
        initial = initial_model(first_stage.model, first_stage.data, sequence.layout,
                                pipeline.recipe.source_file)
        record = run_sequence(sequence, initial, *components, resume=resume)
        result.continual = record.model_dump(mode="json")
        result.stage_seconds["guarded sequence"] = round(time.perf_counter() - started, 2)
        for task in record.provenance["tasks"]:
            models[task["task"]] = Path(task["model"])

    if pipeline.recipe.eval.datasets:
        for name in pipeline.recipe.eval.stages or [pipeline.stages[-1][0]]:
            evaluate(pipeline, name, models[name], result)
    return result


def evaluate(pipeline: Pipeline, name: str, model_dir: Path, result: PipelineResult) -> None:
    """Evaluate one model on the pipeline's eval sets into ``OUT/eval/<name>/`` (reports call it ``name``),
    as the last stage's data is formatted (template, system prompt, image handling); adds its scores and
    time to ``result``."""
    spec, last = pipeline.recipe.eval, pipeline.stages[-1][1]
    started = time.perf_counter()
    result.evaluations[name] = evaluate_model(
        model_dir, spec, pipeline.layout.eval(name), template=last.data.template,
        system_prompt=last.data.system_prompt, image_aspect_ratio=last.data.image_aspect_ratio, name=name)
    result.stage_seconds[f"eval:{name}"] = round(time.perf_counter() - started, 2)
