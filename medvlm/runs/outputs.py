"""Claiming the output directory of a run that resumes finished work."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from medvlm.errors import MedvlmError
from medvlm.io import write_text
from medvlm.recipe import Recipe
from medvlm.rundir import RECIPE

log = logging.getLogger("medvlm")


def claim_output_dir(out: Path, recipe: Recipe, what: str) -> None:
    """Make ``out`` this recipe's before a pipeline or continual run reuses anything in it.

    Those runs skip finished stages and tasks, which is only right when the finished work came from
    the same resolved recipe: otherwise a rerun with another method would silently report the
    earlier run's results under the new name. A different recipe is refused, or with
    ``output.overwrite`` the directory is cleared.
    """
    text = recipe.to_yaml()
    stored = out / RECIPE
    if stored.is_file() and stored.read_text(encoding="utf-8") != text:
        if not recipe.output.overwrite:
            raise MedvlmError(f"{out}: holds a {what} of a different recipe ({stored} differs); choose another "
                              "output.dir, or set output.overwrite=true to replace it")
        log.info("%s: replacing the %s of a different recipe (output.overwrite)", out, what)
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(stored, text)
