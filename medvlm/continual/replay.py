"""Experience replay: a reservoir buffer over every earlier task's training samples, mixed into each
new task at a ratio (replayed samples per task training sample).

The buffer is rebuilt deterministically from the run's seed and the earlier tasks' data (reservoir
sampling is a pure function of the sample stream and the random stream), so an interrupted run
resumes with exactly the buffer it had; ``replay.json`` in each task directory lists what was replayed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from medvlm.continual import TaskContext, TaskParts, draw_samples, register_guard
from medvlm.io import write_json
from medvlm.recipe import Recipe

T = TypeVar("T")


def reservoir(stream: Iterable[T], capacity: int, rng: random.Random) -> list[T]:
    """Algorithm R: a uniform sample of ``capacity`` items from a stream of unknown length."""
    buffer: list[T] = []
    for seen, item in enumerate(stream):
        if seen < capacity:
            buffer.append(item)
        else:
            slot = rng.randint(0, seen)
            if slot < capacity:
                buffer[slot] = item
    return buffer


@register_guard("replay")
class ReplayGuard:
    def __init__(self, recipe: Recipe) -> None:
        assert recipe.continual is not None
        self.spec = recipe.continual.replay

    def prepare(self, task: TaskContext) -> TaskParts:
        if task.index == 1:
            return TaskParts(report={"buffer": 0, "replayed": 0})
        stream = (s for k in range(1, task.index) for s in task.read_task_samples(k))
        buffer = reservoir(stream, self.spec.buffer_size, random.Random(f"replay-buffer-{task.seed}"))
        count = max(1, round(self.spec.ratio * len(task.samples)))
        replayed = draw_samples(buffer, count, random.Random(f"replay-{task.seed}-{task.index}"))
        write_json(task.task_dir / "replay.json", {"buffer": [s.id for s in buffer],
                                                   "replayed": [s.id for s in replayed]})
        return TaskParts(extra_samples=replayed, report={"buffer": len(buffer), "replayed": len(replayed)})

    def finish(self, task: TaskContext, model_dir: Path) -> None:
        return None
