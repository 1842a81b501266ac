"""``scripts/test.sh``: extra pytest arguments keep the fast selection unless they bring their own ``-m``."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO


def collected(*args: str) -> str:
    env = {**os.environ, "MEDVLM_VENV": os.environ.get("VIRTUAL_ENV") or str(REPO / ".venv")}
    result = subprocess.run(["bash", str(REPO / "scripts" / "test.sh"), "--collect-only", "-q", *args],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return result.stdout


SLOW = "test_demo.py::test_full_demo_meets_its_targets"
FAST = "test_demo.py::test_shortened_demo_runs_every_stage_and_scores"


def test_extra_arguments_keep_the_fast_default() -> None:
    out = collected("tests/integration/test_demo.py")
    assert FAST in out and SLOW not in out and "3 deselected" in out


def test_an_explicit_marker_replaces_the_default() -> None:
    out = collected("-m", "slow", "tests/integration/test_demo.py")
    assert SLOW in out and FAST not in out
