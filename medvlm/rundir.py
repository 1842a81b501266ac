"""Every file of a run directory, named once.

A stage run, a pipeline and a continual task sequence each leave a directory that later commands
read back (``medvlm predict``/``export`` find the model, reports find scores and ``continual.json``,
reruns find finished work). Those names used to be spelled wherever they were needed; here they are
spelled once, as paths relative to the directory's root. This module sits with the foundations
because code of every layer reads run directories (export and evaluation below the runners that
write them).

Stage run (``medvlm train``)::

    recipe.resolved.yaml   the recipe after bases, overrides and variables
    provenance.json        package version, git commit, data checksums
    data_report.json       what each source read, kept, skipped; truncated and rejected samples
    checkpoints/           Trainer checkpoints (model or adapter, optimizer, RNG, state)
    logs/train.jsonl       loss, learning rate, grad norm, tokens/s per logging step
    adapter/               LoRA/DoRA/QLoRA runs: the adapter with the fully trained projector
    model/                 the final model (its presence means "stage complete")
    base/                  merge_at_end=false on a tiny preset: the base the adapter names
    train_summary.json     steps, final loss, wall time, throughput

Pipeline (``medvlm pipeline``): ``<stage>/`` stage runs, ``eval/<stage>/<dataset>/`` answers and
scores. Continual sequence: ``initial/``, ``eval/initial/``, ``tasks/NN-<task>/{train/, model/,
eval/, task.json}``, ``continual.json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RECIPE = "recipe.resolved.yaml"
PROVENANCE = "provenance.json"
DATA_REPORT = "data_report.json"
CHECKPOINTS = "checkpoints"
LOGS = "logs"
ADAPTER = "adapter"
MODEL = "model"
BASE = "base"
TRAIN_SUMMARY = "train_summary.json"
EVAL = "eval"
ANSWERS = "answers.jsonl"
SCORES = "scores.json"
CONTINUAL = "continual.json"
TASKS = "tasks"
TASK_RECORD = "task.json"
CONSOLIDATION = "consolidation.json"  # inside a consolidated model directory


@dataclass(frozen=True)
class RunDir:
    """A directory a run writes: it holds the resolved recipe and provenance of what ran."""

    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / RECIPE

    @property
    def provenance(self) -> Path:
        return self.root / PROVENANCE


@dataclass(frozen=True)
class StageDir(RunDir):
    """The directory of one training stage."""

    @property
    def data_report(self) -> Path:
        return self.root / DATA_REPORT

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @property
    def train_log(self) -> Path:
        return self.root / LOGS / "train.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / LOGS / "tensorboard"

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def base(self) -> Path:
        return self.root / BASE

    @property
    def summary(self) -> Path:
        return self.root / TRAIN_SUMMARY

    @property
    def complete(self) -> bool:
        return self.model.is_dir()


@dataclass(frozen=True)
class EvalDir:
    """Answers and scores of one model on one evaluation set."""

    root: Path

    @property
    def answers(self) -> Path:
        return self.root / ANSWERS

    @property
    def scores(self) -> Path:
        return self.root / SCORES


@dataclass(frozen=True)
class PipelineDir(RunDir):

    def stage(self, name: str) -> StageDir:
        return StageDir(self.root / name)

    def eval(self, model_name: str) -> Path:
        """Where the evaluations of one stage's model go (one subdirectory per evaluation set)."""
        return self.root / EVAL / model_name


@dataclass(frozen=True)
class TaskDir:
    """One task of a continual sequence: its training stage, its (consolidated) model, its probes."""

    root: Path

    @property
    def train(self) -> StageDir:
        return StageDir(self.root / "train")

    @property
    def model(self) -> Path:
        return self.root / MODEL

    @property
    def eval(self) -> Path:
        return self.root / EVAL

    @property
    def record(self) -> Path:
        """``task.json``, written last: the task is complete."""
        return self.root / TASK_RECORD


@dataclass(frozen=True)
class ContinualDir(RunDir):

    @property
    def initial(self) -> StageDir:
        return StageDir(self.root / "initial")

    @property
    def initial_eval(self) -> Path:
        return self.root / EVAL / "initial"

    def task(self, index: int, name: str) -> TaskDir:
        return TaskDir(self.root / TASKS / f"{index:02d}-{name}")

    @property
    def record(self) -> Path:
        return self.root / CONTINUAL


def model_label(model_dir: str | Path) -> str:
    """How reports name a model directory: a stage's ``OUT/<stage>/model`` by its stage, a continual
    task's own training stage (``tasks/NN-name/train/model``) as ``NN-name/train``."""
    path = Path(model_dir)
    if path.name != MODEL or not path.parent.name:
        return path.name
    label = path.parent.name
    if label == "train":
        return f"{path.parent.parent.name}/train"
    return label


def run_dir_of(path: str | Path) -> Path | None:
    """The stage run directory that ``path`` (the run itself, its model/adapter or a checkpoint) belongs
    to, found by its resolved recipe; None outside a run."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / RECIPE).is_file():
            return candidate
    return None
