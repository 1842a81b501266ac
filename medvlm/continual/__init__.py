"""Continual learning: consolidators, training guards and forgetting metrics.

Two small interfaces plug continual learning into training (DESIGN.md):

* a **consolidator** ``(previous_state, current_state, config) -> state`` merges θ_{t−1} and the
  freshly trained θ̂_t into θ_t — ``sac`` (Spectral-Aware Consolidation) and ``mix`` (model mix);
* a **guard** acts around the training of one task: it may add loss plugins to the Trainer (UIR,
  LwF, EWC, O-LoRA — each ``(model, inputs, outputs) -> loss term``, see
  :class:`medvlm.train.trainer.LossPlugin`), add training samples (replay, UIR's inquiries), and
  record state once the task's final model exists (EWC's Fisher).

Both are registries filled by decorators in the modules of this package, so a new method is one
new file. ``medvlm.runs.continual`` runs a task sequence with them and measures forgetting
(:mod:`medvlm.continual.metrics`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import BaseModel

from medvlm import registry
from medvlm.data.records import Sample
from medvlm.errors import ModelError
from medvlm.recipe import ContinualSpec, Recipe
from medvlm.registry import Registry

StateDict = dict[str, torch.Tensor]


@dataclass
class LowRankDelta:
    """An update known in factored form: Δ = scale·B·A (a LoRA adapter), B: m×r, A: r×n."""

    b: torch.Tensor
    a: torch.Tensor
    scale: float

    def dense(self) -> torch.Tensor:
        return (self.b.to(torch.float32) @ self.a.to(torch.float32)) * float(self.scale)


@dataclass
class ConsolidationConfig:
    """Settings of one consolidation, and what it did.

    ``low_rank`` maps state-dict keys to the exact factors of their update (LoRA), for SAC's fast
    path; ``stats`` is filled by the consolidator (per-tensor outcomes, counts) for the run record.
    """

    ratio: float = 0.2
    alpha: float = 0.5
    settings: Any = None  # the method's registered settings section (register_settings); None: its defaults
    low_rank: dict[str, LowRankDelta] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


def check_compatible(previous: StateDict, current: StateDict) -> None:
    """Both state dicts hold the same keys with the same shapes (else a ModelError naming one)."""
    missing, extra = sorted(set(previous) - set(current)), sorted(set(current) - set(previous))
    if missing or extra:
        raise ModelError("the two models have different parameters (not the same architecture?): "
                         f"only in previous: {missing[:5]}, only in current: {extra[:5]}")
    for key, tensor in previous.items():
        if tensor.shape != current[key].shape:
            raise ModelError(f"parameter {key}: shape {tuple(tensor.shape)} in previous, "
                             f"{tuple(current[key].shape)} in current")


class Consolidator(Protocol):
    def __call__(self, previous: StateDict, current: StateDict, config: ConsolidationConfig) -> StateDict: ...


@dataclass
class TaskContext:
    """What a guard may use when task ``index`` (1-based) is about to train or has trained."""

    spec: ContinualSpec
    index: int
    name: str  # the task (a task of a continual recipe, or a stage of a guarded pipeline)
    stage: Recipe  # the stage recipe this task trains with
    previous_model: Path  # θ_{t−1}
    task_dir: Path
    earlier_task_dirs: list[Path]
    samples: list[Sample]  # this task's training samples (prompt style applied)
    read_task_samples: Callable[[int], list[Sample]]  # training samples of task k (1-based)
    seed: int
    _teacher: Any = None

    def teacher(self) -> torch.nn.Module:
        """A frozen copy of θ_{t−1}, loaded once and shared by every guard of this task."""
        if self._teacher is None:
            from medvlm.model.build import load_pretrained

            model, _ = load_pretrained(self.previous_model, dtype=self.stage.model.dtype)
            model.eval().requires_grad_(False)
            self._teacher = model
        return self._teacher

    def release_teacher(self) -> None:
        """Drop this context's reference to the teacher (its memory returns once plugins are gone)."""
        self._teacher = None


@dataclass
class TaskParts:
    """What a guard adds to one task's training."""

    plugins: list[Any] = field(default_factory=list)  # LossPlugin objects
    extra_samples: list[Sample] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)


class Guard(Protocol):
    """Built once per run from the continual recipe (so it can reject a recipe it cannot serve before
    anything trains); ``prepare`` runs before and ``finish`` after each task."""

    def prepare(self, task: TaskContext) -> TaskParts: ...

    def finish(self, task: TaskContext, model_dir: Path) -> None: ...


def draw_samples(pool: list[Sample], count: int, rng: random.Random) -> list[Sample]:
    """``count`` samples from ``pool``: without replacement while it lasts, then further reshuffled
    passes (so a small pool is used evenly rather than at random with repeats)."""
    drawn: list[Sample] = []
    while len(drawn) < count and pool:
        order = list(pool)
        rng.shuffle(order)
        drawn.extend(order[: count - len(drawn)])
    return drawn


CONSOLIDATORS: Registry[Consolidator] = registry.CONSOLIDATORS
GUARDS: Registry[Callable[[Recipe], Guard]] = registry.GUARDS
METHOD_SETTINGS: Registry[type[BaseModel]] = registry.METHOD_SETTINGS
register_consolidator = CONSOLIDATORS.register
register_guard = GUARDS.register
# decorates the settings model (a medvlm.recipe.Section) of a consolidator or guard, under its name:
# the recipe then takes ``continual.<name>`` validated by it (see ContinualSpec)
register_settings = METHOD_SETTINGS.register


def get_consolidator(name: str) -> Consolidator:
    return CONSOLIDATORS.get(name)


def get_guard(name: str) -> Callable[[Recipe], Guard]:
    return GUARDS.get(name)


def is_consolidator(name: str) -> bool:
    return name in CONSOLIDATORS
