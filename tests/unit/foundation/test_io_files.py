"""Files medvlm appends to while it works, and files it writes at a user's path (medvlm.io)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medvlm.errors import DataError, OutputError
from medvlm.io import WRITTEN, check_new_output, read_appended_rows, record_written, write_json, written_by_medvlm


def _is_answer(row: object) -> bool:
    return isinstance(row, dict) and "question_id" in row


def test_only_a_torn_last_line_after_complete_rows_is_cut(tmp_path: Path) -> None:
    log = tmp_path / "answers.jsonl"
    log.write_text('{"question_id": 1}\n{"question_id": 2}\n{"question_id"')
    assert read_appended_rows(log, _is_answer, "an answer row") == [{"question_id": 1}, {"question_id": 2}]
    assert log.read_text() == '{"question_id": 1}\n{"question_id": 2}\n'
    # someone's one-line file without a newline looks like a torn line, but follows no complete row:
    # it was cut to nothing before (a predict or judge output pointed at it)
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    with pytest.raises(DataError, match=rf"{notes}: line 1 is not an answer row; fix or remove it"):
        read_appended_rows(notes, _is_answer, "an answer row")
    assert notes.read_text() == "my notes"
    # valid JSON that is not a row, followed by more lines: never cut
    other = tmp_path / "other.jsonl"
    other.write_text('{"question_id": 1}\n[1, 2]\n{"question_id"')
    with pytest.raises(DataError, match="line 2 is not an answer row"):
        read_appended_rows(other, _is_answer, "an answer row")
    assert other.read_text().endswith('{"question_id"')
    assert read_appended_rows(tmp_path / "absent.jsonl", _is_answer, "an answer row") == []


def test_a_file_counts_as_medvlms_only_while_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    check_new_output(out)  # absent: fine
    write_json(out, {"n": 1})
    assert not written_by_medvlm(out)  # written, but not recorded as a user-path output
    with pytest.raises(OutputError, match="exists and is not a file medvlm wrote"):
        check_new_output(out)
    record_written(out)
    assert written_by_medvlm(out)
    check_new_output(out)
    out.write_text(out.read_text().replace("1", "2"))  # same size, other bytes
    assert not written_by_medvlm(out)
    check_new_output(out, overwrite=True)
    # removed files leave the record; an unreadable or oversized record is no record
    other = tmp_path / "other.json"
    write_json(other, [])
    record_written(other)
    assert sorted(json.loads((tmp_path / WRITTEN).read_text())["files"]) == ["other.json", "scores.json"]
    out.unlink()
    record_written(other)
    assert sorted(json.loads((tmp_path / WRITTEN).read_text())["files"]) == ["other.json"]
    (tmp_path / WRITTEN).write_text("[" * 10_000)
    assert not written_by_medvlm(other)
    (tmp_path / WRITTEN).write_text(json.dumps({"files": {"other.json": {"size": 3, "sha256": "0" * 64}},
                                                "pad": "x" * (1 << 20)}))
    assert not written_by_medvlm(other)
