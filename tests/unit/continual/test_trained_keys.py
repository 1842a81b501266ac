"""Consolidation on what a stage trained: the components are read with the model's own family."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.continual.checkpoints import Update, trained_keys
from medvlm.model.families import get_family
from medvlm.model.tiny import build_tiny
from tests.helpers.families import FAMILIES


@pytest.mark.parametrize("name", FAMILIES)
def test_the_projector_of_every_family_is_what_an_align_stage_consolidates(name: str) -> None:
    family = get_family(name)
    model, processor = build_tiny("micro-clip-llama", family=name, template=family.default_template)
    previous = {key: value.detach().clone() for key, value in model.state_dict().items()}
    projector = {key for key in previous if family.component_of(key) == "projector"}
    assert projector
    current = {key: value + 1 if key in projector else value for key, value in previous.items()}
    update = Update(model, processor, previous, current, {}, Path("before"), Path("after"))
    stats: dict = {}
    assert trained_keys(update, ("projector",), stats) == projector
    assert stats == {"components": ["projector"], "frozen_changed": 0}
