"""The validation twin of the synthetic test sets: the same generator with another seed.

Choosing a configuration by its score on the test probes would fit the choice to them. Benchmarks
that choose (step counts, guards, floors) score the candidates on this twin instead: images and
questions drawn from the same distributions, none of which any run trains or is tested on.
"""

from __future__ import annotations

from pathlib import Path

from medvlm.data.synthetic import SyntheticSpec, materialise
from medvlm.recipe import SourceSpec

VALIDATION_SEED = 1
VALIDATION_DIR = "validation"


def materialise_validation(parent: Path) -> Path:
    """Generate the twin once under ``parent`` (a later call reuses it) and return its directory."""
    return Path(materialise(str(parent / VALIDATION_DIR), SyntheticSpec(seed=VALIDATION_SEED)))


def as_validation(spec: SourceSpec, parent: Path) -> None:
    """Point a synthetic source at the twin under ``parent`` (its split stays: ``test`` is the twin's
    held-out part, which no one trains on either)."""
    if spec.dataset != "synthetic":
        raise ValueError(f"only synthetic sources have a validation twin, not '{spec.dataset}'")
    spec.path = str(parent / VALIDATION_DIR)
    spec.options = {**spec.options, "seed": VALIDATION_SEED}
