"""One run per output directory, and staging paths no other run shares (issue 11)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import medvlm.io
from medvlm import claims
from medvlm.errors import OutputError
from medvlm.io import LOCK_FILE, check_replaceable, unique_staging


def _lock(directory: Path, pid: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00"}))
    return lock


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_run_is_refused_naming_the_holder(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    holder = os.getppid()  # a live process that is not this one
    _lock(out, holder)
    (out / "recipe.resolved.yaml").write_text("name: first\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "second", "model": {"preset": "micro-clip-llama"},
                                      "data": {"train": [{"dataset": "llava", "path": str(tmp_path / "d.json")}]},
                                      "output": {"dir": str(out)}}))
    cli("train", recipe).refused(f"{out.resolve()}: in use by another medvlm run (pid {holder} on host "
                                 f"{socket.gethostname()}", within=3)
    assert (out / "recipe.resolved.yaml").read_text() == "name: first\n"  # the first run's files untouched
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path: Path) -> None:
    lock = _lock(tmp_path / "out", _dead_pid())
    with claims.claim(tmp_path / "out"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
        with claims.claim(tmp_path / "out"):  # re-entrant: a pipeline's stage inside its own claim
            pass
        assert lock.exists()
    assert not lock.exists()


def test_two_takers_of_one_stale_lock_do_not_both_hold_the_directory(tmp_path: Path, monkeypatch) -> None:
    """The other taker wins the race: between our look at the stale lock and our takeover it replaced
    the lock with its own (a live process). We must not remove its lock: we are refused instead."""
    dead, other = _dead_pid(), os.getppid()
    lock = _lock(tmp_path / "out", dead)
    alive = medvlm.io._pid_alive

    def the_other_taker_wins(pid: int) -> bool:
        if pid == dead:
            _lock(tmp_path / "out", other)
        return alive(pid)

    monkeypatch.setattr(medvlm.io, "_pid_alive", the_other_taker_wins)
    with pytest.raises(OutputError, match=f"in use by another medvlm run \\(pid {other} on host"):
        claims.acquire(tmp_path / "out")
    assert json.loads(lock.read_text())["pid"] == other  # its claim stands


def test_a_lock_from_another_host_is_never_guessed_stale(tmp_path: Path) -> None:
    lock = _lock(tmp_path / "out", _dead_pid())
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(OutputError, match="pid 1 on host elsewhere"):
        claims.acquire(tmp_path / "out")


def test_staging_paths_are_unique_per_run(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    name = unique_staging(tmp_path / "model").name
    assert name == f".model.staging-{socket.gethostname()}-{os.getpid()}"
    monkeypatch.setenv("WORLD_SIZE", "2")  # all processes of one distributed run share the staging path
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    assert unique_staging(tmp_path / "model").name == ".model.staging-10.0.0.1-29511"


def test_a_folder_a_live_run_holds_is_never_replaced(cli, tmp_path: Path, micro_model_dir: Path) -> None:
    """export --overwrite replaced a folder whose only content was a live run's lock: the run's output
    directory was pulled from under it."""
    out = tmp_path / "busy"
    holder = os.getppid()
    lock = _lock(out, holder)
    refusal = f"{out}: in use by a medvlm run (pid {holder} on host {socket.gethostname()}); refusing to replace it"
    cli("export", micro_model_dir, out, "--overwrite").refused(refusal, within=10)
    cli("consolidate", "--method", "mix", "--previous", micro_model_dir, "--current", micro_model_dir,
        "--output", out, "--overwrite").refused(refusal, within=10)
    assert json.loads(lock.read_text())["pid"] == holder and sorted(out.iterdir()) == [lock]
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))  # a run that is gone
    assert cli("export", micro_model_dir, out, "--overwrite").status == 0


def test_every_replacement_checks_the_lock_but_not_against_its_own_run(tmp_path: Path) -> None:
    """check_replaceable (export, consolidate, convert-llava, replace_dir) reads the holder itself:
    another live process is refused, --overwrite or not; the process that holds the lock is not."""
    out = tmp_path / "busy"
    _lock(out, os.getppid())
    with pytest.raises(OutputError, match=f"in use by a medvlm run \\(pid {os.getppid()} on host"):
        check_replaceable(out, overwrite=True)
    _lock(out, os.getpid())
    check_replaceable(out, overwrite=True)


def test_a_run_directory_under_a_file_is_a_clear_error(tmp_path: Path) -> None:
    """train with output.dir under a file ended in a NotADirectoryError traceback (probe T06)."""
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(OutputError, match="cannot be created: it or one of its parents is a file"):
        claims.acquire(tmp_path / "afile" / "sub")
    assert (tmp_path / "afile").read_text() == "mine"
