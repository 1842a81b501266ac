"""Fixtures for the serving tests: a saved micro model and its generator."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.eval.generation import Generator


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory, micro_model) -> Path:
    """The micro model saved as a model directory, as ``medvlm serve`` and ``medvlm chat`` load it."""
    model, processor = micro_model
    path = tmp_path_factory.mktemp("served") / "micro"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def micro_generator(micro_model) -> Generator:
    model, processor = micro_model
    return Generator(model, processor)
