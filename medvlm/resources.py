"""Files medvlm reads from its own checkout: the shipped recipes."""

from __future__ import annotations

from pathlib import Path


def recipes_dir() -> Path:
    """The repository's ``recipes/`` directory (medvlm is installed from its checkout)."""
    return Path(__file__).resolve().parent.parent / "recipes"
