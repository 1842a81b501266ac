"""Shared fixtures: a tiny model built once per session, synthetic data generated once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One intra-op thread per test process and per process a test starts (set before torch loads its
# OpenMP runtime): the suite's tiny models gain little from a second thread, and with torch's default
# team of one thread per core, any other busy process on a 2-core CI machine slows every training step
# several-fold (bench/contention.py, medvlm/runs/threads.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from medvlm.data.synthetic import SyntheticSpec, materialise  # noqa: E402

SMALL_SYNTH = SyntheticSpec(seed=0, image_size=32, general_images={"train": 60, "test": 20},
                            medical_images={"train": 60, "test": 20})
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    """A small synthetic data set (same generator, fewer images)."""
    return materialise(tmp_path_factory.mktemp("synthetic") / "data", SMALL_SYNTH)


@pytest.fixture(scope="session")
def synthetic_options() -> dict:
    """Source options matching SMALL_SYNTH (the synthetic source checks the spec digest)."""
    return {"general_images": dict(SMALL_SYNTH.general_images), "medical_images": dict(SMALL_SYNTH.medical_images)}


@pytest.fixture(scope="session")
def tiny_model():
    from medvlm.model.tiny import build_tiny

    return build_tiny("tiny-clip-llama", seed=0)


@pytest.fixture(scope="session")
def micro_model():
    from medvlm.model.tiny import build_tiny

    return build_tiny("micro-clip-llama", seed=0)


@pytest.fixture()
def real_data() -> Path:
    root = os.environ.get("MEDVLM_REAL_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("MEDVLM_REAL_DATA is not set to the shared benchmark samples")
    return Path(root)
