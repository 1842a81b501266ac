"""Files written at a path the user chose: someone's file is never replaced without --overwrite
(probes C07, S08), while a rerun replaces its own unchanged output without asking (issue 11)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from medvlm.io import WRITTEN
from tests.helpers.data_fixtures import write_image

REFUSED = "exists and is not a file medvlm wrote (or it was changed since); give another path, or pass --overwrite"


def _data(tmp_path: Path) -> Path:
    write_image(tmp_path / "a.png")
    data = tmp_path / "test.json"
    data.write_text(json.dumps([{"id": str(i), "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]} for i in (1, 2)]))
    return data


def test_convert_replaces_its_own_output_but_not_someones_file(cli, tmp_path: Path) -> None:
    data = _data(tmp_path)
    notes = tmp_path / "notes.json"
    notes.write_text("my notes, not medvlm's")
    convert = ("data", "convert", "--dataset", "llava", "--path", data, "--output")
    cli(*convert, notes).refused(f"{notes}: {REFUSED}", within=5)
    assert notes.read_text() == "my notes, not medvlm's"

    out = tmp_path / "converted.json"
    assert cli(*convert, out).status == 0
    assert cli(*convert, out, "--limit", "1").status == 0  # a rerun: no flag needed
    assert len(json.loads(out.read_text())) == 1
    out.write_text(out.read_text().replace("red", "blue"))  # edited by hand since: someone's now
    cli(*convert, out).refused(f"{out}: {REFUSED}", within=5)
    assert "blue" in out.read_text()

    assert cli(*convert, notes, "--overwrite").status == 0  # asked for
    assert len(json.loads(notes.read_text())) == 2
    written = json.loads((tmp_path / WRITTEN).read_text())
    assert written["written_by"] == "medvlm" and sorted(written["files"]) == ["converted.json", "notes.json"]


def test_score_checks_both_of_its_files_before_writing_either(cli, tmp_path: Path) -> None:
    data = _data(tmp_path)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q, "text": "red"}) + "\n" for q in ("1", "2")))
    items = tmp_path / "notes.items.jsonl"  # the per-item twin of --output notes.txt
    items.write_text("someone's list\n")
    score = ("score", "--dataset", "llava", "--path", data, "--predictions", answers, "--bootstrap", "0", "--output")
    cli(*score, tmp_path / "notes.txt").refused(f"{items}: {REFUSED}", within=5)
    assert items.read_text() == "someone's list\n" and not (tmp_path / "notes.txt").exists()

    scores = tmp_path / "scores.json"
    assert cli(*score, scores).status == 0
    assert cli(*score, scores).status == 0  # a rerun
    assert json.loads(scores.read_text())["n"] == 2
    assert cli(*score, tmp_path / "notes.txt", "--overwrite").status == 0
    assert items.read_text().count("\n") == 2


def test_report_refuses_someones_file_and_a_json_output(cli, tmp_path: Path) -> None:
    data = _data(tmp_path)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": q, "text": "red"}) + "\n" for q in ("1", "2")))
    scores = tmp_path / "scores.json"
    assert cli("score", "--dataset", "llava", "--path", data, "--predictions", answers, "--bootstrap", "0",
               "--output", scores).status == 0
    page = tmp_path / "page.html"
    page.write_text("<p>my page</p>")
    cli("report", scores, "--output", page).refused(f"{page}: {REFUSED}", within=10)
    cli("report", scores, "--output", tmp_path / "r.json").refused(
        "the report's data is written beside the HTML as a .json file; give an .html path", within=10)
    assert page.read_text() == "<p>my page</p>"
    assert cli("report", scores, "--output", tmp_path / "report.html").status == 0
    assert cli("report", scores, "--output", tmp_path / "report.html").status == 0  # a rerun


def test_a_device_pipe_or_link_to_one_is_never_replaced(cli, tmp_path: Path) -> None:
    """Probe F1: --output onto a FIFO (or a link to one, or a device such as /dev/full) replaced the
    node with a regular file, --overwrite or not."""
    data = _data(tmp_path)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(fifo)
    for target in (fifo, link, Path("/dev/null")):
        for extra in ((), ("--overwrite",)):
            cli("data", "convert", "--dataset", "llava", "--path", data, "--output", target, *extra).refused(
                f"{target}: is not a regular file (a device, pipe or socket)", within=5)
    assert stat.S_ISFIFO(fifo.stat().st_mode) and link.is_symlink() and Path("/dev/null").is_char_device()


def test_file_system_refusals_are_one_line(cli, tmp_path: Path) -> None:
    """Probes F2, F4, F12: a read-only folder, a data set written onto a file, a path under /proc ended
    in PermissionError / NotADirectoryError / FileNotFoundError tracebacks."""
    data = _data(tmp_path)
    blocker = tmp_path / "t.txt"
    blocker.write_text("x")
    cli("data", "synth", "--output", blocker).refused(f"{blocker}: Not a directory", within=10)
    cli("data", "convert", "--dataset", "llava", "--path", data, "--output", "/proc/self/o.json").refused(
        "medvlm: error: /proc/self/o.json: No such file or directory", within=5)  # not its hidden temporary
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores the mode bits: nothing to show here
            pytest.skip("running as root: a read-only directory is writable")
        cli("data", "convert", "--dataset", "llava", "--path", data, "--output", locked / "o.json").refused(
            "Permission denied", within=5)
    finally:
        locked.chmod(0o700)


def test_a_closed_stdout_ends_quietly(tmp_path: Path) -> None:
    """Probe F12: ``medvlm data inspect --json | head -c 10`` ended in a BrokenPipeError traceback."""
    data = tmp_path / "many.json"  # every image missing: --json lists 3000 problems, far more than a pipe holds
    data.write_text(json.dumps([{"id": str(i), "image": "absent.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]} for i in range(3000)]))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    shell = f"{sys.executable} -m medvlm data inspect --dataset llava --path {data} --json | head -c 10"
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.stdout == "{\n  \"datas" and "Traceback" not in result.stderr and result.returncode == 141
