"""The pathvqa source: original pickles (restricted unpickler), LXMERT JSON, Hugging Face parquet."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest
from PIL import Image

from medvlm.cli import main
from medvlm.data import safe_pickle
from medvlm.data.sources import read_source
from medvlm.data.sources.pathvqa import question_category
from medvlm.errors import DataError
from tests.helpers.data_fixtures import write_image, write_json

QA = [
    {"image": "test_0000", "question": "What is present?", "answer": "squamous cell carcinoma"},
    {"image": "test_0000", "question": "Is squamous cell carcinoma present?", "answer": "yes"},
    {"image": "test_0001", "question": "How many cells are shown?", "answer": 2},
    {"image": "test_0001", "question": "Does this image show necrosis?", "answer": "No"},
]


@pytest.fixture()
def pvqa(tmp_path: Path) -> Path:
    root = tmp_path / "pvqa"
    (root / "qas" / "test").mkdir(parents=True)
    (root / "qas" / "test" / "test_qa.pkl").write_bytes(pickle.dumps(QA, protocol=2))
    write_image(root / "images" / "test" / "test_0000.jpg")
    write_image(root / "images" / "test" / "test_0001.jpg")
    return root


def test_pickle_layout(pvqa: Path) -> None:
    samples, report = read_source("pathvqa", str(pvqa), "test")
    assert [s.meta.source_id for s in samples] == ["test_0000-0", "test_0000-1", "test_0001-0", "test_0001-1"]
    assert [s.meta.answer_type for s in samples] == ["OPEN", "CLOSED", "OPEN", "CLOSED"]  # "No" is closed too
    assert [s.meta.question_type for s in samples] == ["what", "yes/no", "how much/many", "yes/no"]
    assert samples[2].answer == "2" and report.read == 4
    assert samples[0].images == ["test_0000.jpg"] and samples[0].image_root == str(pvqa / "images" / "test")
    file_samples, _ = read_source("pathvqa", str(pvqa / "qas" / "test" / "test_qa.pkl"), "test")
    assert [s.id for s in file_samples] == [s.id for s in samples]
    assert file_samples[0].image_root == samples[0].image_root


def test_question_categories() -> None:
    assert question_category("Where is this from?", "OPEN") == "where"
    assert question_category("How much fluid is there?", "OPEN") == "how much/many"
    assert question_category("Cells with nuclei show what?", "OPEN") == "other"
    assert question_category("Is it?", "CLOSED") == "yes/no"


def test_lxmert_json(tmp_path: Path) -> None:
    entries = [
        {"img_id": "test_0000", "labelf": {"pvqa": [{"squamous cell carcinoma": 1}, {"yes": 1}]},
         "sentf": {"pvqa": ["What is present?", "Is squamous cell carcinoma present?"]}},
        {"img_id": "test_0002", "labelf": {"pvqa": []}, "sentf": {"pvqa": []}},  # image without questions
        {"img_id": "test_0003", "labelf": {"pvqa": [{"no": 1}]}, "sentf": {"pvqa": ["A?", "B?"]}},  # mismatch
    ]
    path = write_json(tmp_path / "pvqa_test.json", entries, indent=2)
    samples, report = read_source("pathvqa", str(tmp_path), "test", policy="skip")
    assert [(s.meta.source_id, s.answer, s.meta.answer_type) for s in samples] == [
        ("test_0000-0", "squamous cell carcinoma", "OPEN"), ("test_0000-1", "yes", "CLOSED")]
    assert [(p.record, p.key, p.message) for p in report.problems] == [
        ("test_0003", "labelf.pvqa", "2 questions but 1 answers")]
    with pytest.raises(DataError, match=r"pvqa_test.json: record test_0003: key 'labelf.pvqa'"):
        read_source("pathvqa", str(path), "test")


def test_parquet_conversion(tmp_path: Path) -> None:
    import datasets

    def jpeg(colour):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), colour).save(buffer, "JPEG")
        return buffer.getvalue()

    table = datasets.Dataset.from_dict(
        {"image": [{"bytes": jpeg((255, 0, 0)), "path": None}, {"bytes": jpeg((0, 0, 255)), "path": None}],
         "question": ["Is this red?", "Where are the cells?"], "answer": ["yes", "in the liver"]},
        features=datasets.Features({"image": datasets.Image(), "question": datasets.Value("string"),
                                    "answer": datasets.Value("string")}))
    (tmp_path / "data").mkdir()
    table.to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    cache = tmp_path / "cache"
    samples, _ = read_source("pathvqa", str(tmp_path), "test", image_cache=str(cache))
    assert [(s.meta.source_id, s.meta.answer_type, s.meta.question_type) for s in samples] == [
        ("test-0", "CLOSED", "yes/no"), ("test-1", "OPEN", "where")]
    assert samples[0].image_root == str(cache) and (cache / samples[0].images[0]).is_file()
    assert samples[0].images[0].endswith(".jpg")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_run(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "test_qa.pkl"
    path.write_bytes(pickle.dumps([{"image": "x", "question": "q", "answer": _Evil(marker)}]))
    with pytest.raises(safe_pickle.UnsafePickle, match=r"test_qa.pkl: unsafe pickle, not executed: refused to load "
                                                       r"global '(posix|os)\.system'"):
        read_source("pathvqa", str(path), "test")
    assert main(["data", "convert", "--dataset", "pathvqa", "--path", str(path), "--output",
                 str(tmp_path / "out.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medvlm: error: ") and str(path) in err and "not executed" in err
    assert not marker.exists() and not (tmp_path / "out.json").exists()


def test_pickles_of_objects_and_corrupt_pickles(tmp_path: Path) -> None:
    import numpy as np

    with pytest.raises(safe_pickle.UnsafePickle, match="numpy"):
        safe_pickle.loads(pickle.dumps([np.zeros(2)]))
    assert safe_pickle.loads(pickle.dumps([{"a": {1, 2}, "b": b"\x00", "c": (1.5, None)}], protocol=0)) == \
        [{"a": {1, 2}, "b": b"\x00", "c": (1.5, None)}]
    truncated = tmp_path / "test_qa.pkl"
    truncated.write_bytes(pickle.dumps(QA)[:40])
    with pytest.raises(DataError, match=r"test_qa.pkl: not a readable pickle"):
        read_source("pathvqa", str(truncated), "test")
    not_a_list = tmp_path / "dict.pkl"
    not_a_list.write_bytes(pickle.dumps({"image": "x"}))
    with pytest.raises(DataError, match="expected a list of QA dicts, got dict"):
        read_source("pathvqa", str(not_a_list), "test")
