"""``medvlm plan`` for every kind of recipe: a stage, a pipeline (each stage), a continual sequence
(each task) — with the frozen teacher copy counted wherever a continual guard keeps one.

The memory model itself is :func:`medvlm.model.plan.plan_memory`; this module only knows which stage
recipes a run trains and which of them carry a teacher (UIR and LwF keep θ_{t−1} beside the model
that trains; a task's ``guards.skip`` can drop it), which the model layer cannot know.
"""

from __future__ import annotations

from pathlib import Path

from medvlm.continual import GUARDS
from medvlm.model.plan import MemoryPlan, plan_memory
from medvlm.recipe import ContinualSpec, Recipe, TaskGuards, load_recipe, load_tree
from medvlm.runs.continual import task_stage
from medvlm.runs.pipeline import load_pipeline, task_start


def needs_teacher(spec: ContinualSpec | None, guards: TaskGuards) -> bool:
    """Whether a task of ``spec``'s method trains beside a frozen teacher (a guard that uses one is on)."""
    if spec is None:
        return False
    return any(name in GUARDS and getattr(GUARDS.get(name), "uses_teacher", False)
               for name in spec.components if name not in guards.skip)


def plan_run(path: str | Path, overrides: list[str] | None = None, *, gpus: int | None = None,
             gpu_memory_gb: float | None = None, reference: str | None = None) -> list[tuple[str | None, MemoryPlan]]:
    """One plan per stage the recipe trains, labelled by stage or task (None for a single-stage recipe).

    A pipeline's later stages start from models that do not exist yet; they are planned on the first
    stage's model (the same architecture), unless ``reference`` names released shapes.
    """
    def plan(recipe: Recipe, teacher: bool) -> MemoryPlan:
        return plan_memory(recipe, gpus=gpus, gpu_memory_gb=gpu_memory_gb, reference=reference, teacher=teacher)

    tree = load_tree(path, overrides)
    if tree.get("stages"):
        pipeline = load_pipeline(path, overrides)
        first_task = task_start(pipeline)
        refs = {ref.name: ref for ref in pipeline.recipe.stages}
        first_model = pipeline.stages[0][1].model
        plans = []
        for index, (name, stage) in enumerate(pipeline.stages):
            if index and stage.model.path and not Path(stage.model.path).is_dir():
                stage = stage.model_copy(update={"model": first_model})
            guarded = first_task is not None and index >= first_task
            plans.append((name, plan(stage, guarded and needs_teacher(pipeline.recipe.continual, refs[name].guards))))
        return plans
    recipe = load_recipe(path, overrides)
    if recipe.continual is not None:
        return [(task.name, plan(task_stage(recipe, task), needs_teacher(recipe.continual, task.guards)))
                for task in recipe.continual.tasks]
    return [(None, plan(recipe, False))]
