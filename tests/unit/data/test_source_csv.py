"""The csv source: a spreadsheet export of questions, one VQA item per row."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.data.sources import read_source
from medvlm.errors import DataError
from medvlm.recipe import SourceSpec

SHEET = (
    "\ufeffid,image,question,answer,answer_type,modality,organ,split\n"  # Excel writes a byte-order mark
    'q1,scans/a.png,"Is there a mass, left or right?",left,CLOSED,CT,CHEST,test\n'
    "q2,scans/b.png,What organ is shown?,liver,open,MRI,ABD,test\n"
    "\n"
    'q3,,"Which lobe?\nAnswer briefly.",upper lobe,,XR,,validation\n'  # a line break inside a quoted cell
    "q4,scans/c.png,Is it normal?,yes,,CT,HEAD,train\n"
)


def write(tmp_path: Path, text: str, name: str = "sheet.csv") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_rows_of_the_requested_split(tmp_path: Path) -> None:
    path = write(tmp_path, SHEET)
    samples, report = read_source("csv", path, "test")
    assert [s.id for s in samples] == ["csv-q1", "csv-q2"] and (report.read, report.kept) == (4, 2)
    first = samples[0]
    assert (first.question, first.answer) == ("Is there a mass, left or right?", "left")
    assert (first.meta.answer_type, first.meta.modality, first.meta.organ) == ("CLOSED", "CT", "CHEST")
    assert first.images == ["scans/a.png"] and first.image_root == str(tmp_path)
    assert samples[1].meta.answer_type == "OPEN"
    (val,), _ = read_source("csv", path, "val")  # aliases of validation
    assert val.images == [] and val.question == "Which lobe?\nAnswer briefly." and val.meta.answer_type is None


def test_renamed_columns_semicolons_and_no_split_column(tmp_path: Path) -> None:
    path = write(tmp_path, "Frage;Antwort\nWelches Organ?;Leber\n")
    (sample,), _ = read_source("csv", path, "test", columns={"question": "Frage", "answer": "Antwort"},
                               delimiter=";")
    assert (sample.id, sample.question, sample.answer) == ("csv-2", "Welches Organ?", "Leber")
    assert SourceSpec(dataset="csv", path=path).dataset == "csv"  # recipes know the name


def test_bad_rows_name_file_record_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, "id,question,answer,answer_type\n"
                           "q1,Is it?,yes,MAYBE\nq2,Is it?,no,CLOSED\nq2,Again?,no,CLOSED\nq4,,x,\n")
    with pytest.raises(DataError, match=r"sheet\.csv: record q1: key 'answer_type': answer_type 'MAYBE'"):
        read_source("csv", path, "test")
    samples, report = read_source("csv", path, "test", policy="skip")
    assert [s.id for s in samples] == ["csv-q2"]
    assert [(p.record, p.key) for p in report.problems] == [("q1", "answer_type"), ("q2", "id"), ("q4", "question")]
    with pytest.raises(DataError, match=r"key 'columns.answer': no 'answer' column"):
        read_source("csv", write(tmp_path, "question,reply\nWhat?,x\n", "other.csv"), "test")
    with pytest.raises(DataError, match="unknown key.*in option columns: answr"):
        read_source("csv", path, "test", columns={"answr": "a"})
