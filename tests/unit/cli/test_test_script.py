"""``scripts/test.sh``: extra pytest arguments keep the fast selection unless they bring their own ``-m``.

The script runs against a stand-in environment (a bootstrap that does nothing, a ``python`` that
prints its arguments), so the test checks the argument logic without installing or running anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO


def pytest_arguments(tmp_path: Path, *args: str) -> list[str]:
    scripts = tmp_path / "checkout" / "scripts"
    scripts.mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "test.sh", scripts / "test.sh")
    (scripts / "bootstrap.sh").write_text("#!/usr/bin/env bash\nexit 0\n")
    (scripts / "bootstrap.sh").chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(f'export PATH="{venv / "bin"}:$PATH"\n')
    (venv / "bin" / "python").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    (venv / "bin" / "python").chmod(0o755)
    env = {**os.environ, "MEDVLM_VENV": str(venv), "MEDVLM_REAL_DATA": str(tmp_path)}
    done = subprocess.run(["bash", str(scripts / "test.sh"), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=True)
    return done.stdout.splitlines()


def test_no_arguments_run_the_fast_suite(tmp_path: Path) -> None:
    assert pytest_arguments(tmp_path) == ["-m", "pytest", "-m", "not slow"]


def test_extra_arguments_keep_the_fast_default(tmp_path: Path) -> None:
    assert pytest_arguments(tmp_path, "-q", "-x") == ["-m", "pytest", "-m", "not slow", "-q", "-x"]


def test_an_explicit_marker_replaces_the_default(tmp_path: Path) -> None:
    assert pytest_arguments(tmp_path / "a", "-m", "slow", "tests/x") == ["-m", "pytest", "-m", "slow", "tests/x"]
    assert pytest_arguments(tmp_path / "b", "-mdistributed") == ["-m", "pytest", "-mdistributed"]
