"""Output directories of runs: taking one over, claiming it for a recipe, preparing a stage's.

Nothing is lost: a directory holding files medvlm did not write (its marker, :mod:`medvlm.io`) is
refused unless ``output.overwrite``, and even then a directory that is or holds one of the run's
own inputs is never cleared.

In a distributed run only the main process prepares a directory. Another rank looking at it while
the main process writes would see the main's temporary files as someone else's (a flaky refusal) or
clear what the main just wrote; the other ranks wait for the main's decision instead.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from medvlm.distributed import is_main_process
from medvlm.errors import MedvlmError
from medvlm.io import RUN, clear_dir, has_foreign_files, mark_dir, write_text
from medvlm.recipe import Recipe
from medvlm.rundir import RECIPE, StageDir
from medvlm.train.trainer import latest_checkpoint

log = logging.getLogger("medvlm")


def recipe_inputs(recipe: Recipe) -> list[str]:
    """Files and directories a run reads: its output directory must never be, or contain, one of them."""
    specs = [*recipe.data.train, *recipe.eval.datasets]
    if recipe.continual is not None:
        specs += [s for task in recipe.continual.tasks for s in (*task.train, *task.eval)]
        specs += [s for probe in recipe.continual.probes for s in probe.eval]
    paths = [recipe.source_file, recipe.model.path, recipe.train.deepspeed]
    paths += [p for spec in specs for p in (spec.path, spec.image_root)]
    return [p for p in paths if p]


def take_over(out: Path, recipe: Recipe) -> None:
    """Files medvlm did not write in ``out`` (someone's folder): refused, or cleared with ``output.overwrite``."""
    if not has_foreign_files(out):
        return
    if not recipe.output.overwrite:
        raise MedvlmError(f"{out}: exists and holds files medvlm did not write; choose another output.dir, "
                          "or set output.overwrite=true to clear it")
    clear_dir(out, protect=recipe_inputs(recipe))


def claim_output_dir(out: Path, recipe: Recipe, what: str, wait: float = 900.0) -> None:
    """Make ``out`` this recipe's before a pipeline or continual run reuses anything in it.

    Those runs skip finished stages and tasks, which is only right when the finished work came from
    the same resolved recipe: otherwise a rerun with another method would silently report the
    earlier run's results under the new name. A different recipe is refused, or with
    ``output.overwrite`` the directory is cleared. A directory of someone else's files is refused
    unless ``output.overwrite``; one that is or holds the run's inputs is never cleared. Other ranks
    of a distributed run wait up to ``wait`` seconds for the main process's claim.
    """
    text = recipe.to_yaml()
    stored = out / RECIPE
    if not is_main_process():
        wait_for_main_claim(stored, text, what, timeout=wait)
        return
    take_over(out, recipe)
    if stored.is_file() and stored.read_text(encoding="utf-8") != text:
        if not recipe.output.overwrite:
            raise MedvlmError(f"{out}: holds a {what} of a different recipe ({stored} differs); choose another "
                              "output.dir, or set output.overwrite=true to replace it")
        log.info("%s: replacing the %s of a different recipe (output.overwrite)", out, what)
        clear_dir(out, protect=recipe_inputs(recipe))
    out.mkdir(parents=True, exist_ok=True)
    mark_dir(out, RUN)
    write_text(stored, text)


def wait_for_main_claim(stored: Path, text: str, what: str, timeout: float = 900.0, poll: float = 0.2) -> None:
    """A non-main rank: wait until the main process has claimed the directory for this recipe.

    The main process writes the resolved recipe last, after any clearing, so once it holds this
    recipe's text the directory is ready. If the main process refuses the directory, the launcher
    stops every rank; the timeout only bounds a main process that hangs.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if stored.read_text(encoding="utf-8") == text:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise MedvlmError(f"{stored.parent}: the main process did not claim this {what} within {timeout:.0f} s "
                              f"({stored} never held this recipe); see the main process's log")
        time.sleep(poll)


def prepare_output_dir(recipe: Recipe, resume: bool) -> StageDir:
    """A stage's output directory, ready to train into (a finished or interrupted run is not reused
    silently: ``--resume`` or ``output.overwrite`` says what to do with it).

    Only the main process looks and writes: the other ranks first touch the directory when the
    Trainer saves, after the main process has prepared it (training starts with a collective).
    """
    out = StageDir(recipe.output_dir)
    if not is_main_process():
        return out
    if out.root.exists() and recipe.output.overwrite and not resume:
        clear_dir(out.root, protect=recipe_inputs(recipe))
    else:
        take_over(out.root, recipe)
    if out.model.exists() and not resume:
        raise MedvlmError(f"{out.root}: this stage already finished (model/ exists); choose another output.dir "
                          "or set output.overwrite=true")
    if latest_checkpoint(out.checkpoints) and not resume:
        raise MedvlmError(f"{out.root}: holds checkpoints of an interrupted run; pass --resume to continue it "
                          "or set output.overwrite=true to start again")
    out.root.mkdir(parents=True, exist_ok=True)
    mark_dir(out.root, RUN)
    return out
