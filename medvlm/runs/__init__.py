"""Orchestration above training, evaluation and continual learning.

A pipeline (several stages, then evaluation), a continual task sequence (tasks trained under a
method, forgetting measured), the demo and the data preview are runs built from the layers below;
nothing below imports this package. :func:`run_recipe` is what ``medvlm pipeline`` calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medvlm.errors import MedvlmError
from medvlm.recipe import load_recipe, load_tree, recipe_from_tree
from medvlm.train.stage import StageResult, run_stage


@dataclass
class RunOutcome:
    """Where a run wrote its results, and the figures worth printing."""

    output_dir: Path
    metrics: dict[str, Any] | None = None


def is_continual_recipe(path: str | Path, overrides: list[str] | None = None) -> bool:
    """Whether a recipe file (with its bases and overrides) describes a continual task sequence (a
    ``continual`` section and no stages; with stages it is a guarded pipeline)."""
    return _is_task_sequence(load_tree(path, overrides))


def _is_task_sequence(tree: dict[str, Any]) -> bool:
    return bool(tree.get("continual")) and not tree.get("stages")


def train_recipe(path: str | Path, overrides: list[str] | None = None, *, resume: bool = False) -> StageResult:
    """``medvlm train``: one stage from a stage recipe (a pipeline recipe is pointed to ``pipeline``)."""
    recipe = load_recipe(path, overrides)
    if recipe.stages:
        raise MedvlmError(f"{path}: this is a pipeline recipe (it lists stages); run it with 'medvlm pipeline'")
    return run_stage(recipe, resume=resume)


def run_recipe(path: str | Path, overrides: list[str] | None = None, *, resume: bool = False) -> RunOutcome:
    """Run a pipeline recipe or a continual task sequence, whichever the recipe describes."""
    tree = load_tree(path, overrides)
    if _is_task_sequence(tree):
        from medvlm.runs.continual import run_continual

        continual = run_continual(recipe_from_tree(tree, path), resume=resume)
        return RunOutcome(continual.output_dir, continual.record["metrics"])
    from medvlm.runs.pipeline import load_pipeline, run_pipeline

    result = run_pipeline(load_pipeline(path, overrides), resume=resume)
    return RunOutcome(result.output_dir, result.continual["metrics"] if result.continual else None)
