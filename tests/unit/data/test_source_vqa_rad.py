"""The vqa_rad source on fixtures in the OSF and MEVF formats, every published quirk included."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.data.sources import read_source
from medvlm.data.sources.vqa_rad import normalise_question_type
from medvlm.errors import DataError
from tests.helpers.data_fixtures import OSF_RECORDS, write_image, write_json


@pytest.fixture()
def osf_dir(tmp_path: Path) -> Path:
    root = tmp_path / "osf"
    write_json(root / "VQA_RAD Dataset Public.json", OSF_RECORDS)
    for name in ("synpic1.jpg", "synpic2.jpg", "synpic3.jpg"):
        write_image(root / "VQA_RAD Image Folder" / name)
    return root


def test_osf_splits_ids_and_quirks(osf_dir: Path) -> None:
    train, report = read_source("vqa_rad", str(osf_dir), "train")
    assert [s.meta.source_id for s in train] == ["0", "1", "2"] and report.read == 6 and report.skipped == 0
    assert train[2].answer == "4" and train[2].meta.answer_type == "OPEN"  # int answer rendered
    assert train[2].meta.organ == "CHEST" and train[2].meta.question_type == "COUNT"
    assert "question_rephrase" not in train[2].meta.extra
    test, _ = read_source("vqa_rad", str(osf_dir / "VQA_RAD Dataset Public.json"), "test")
    assert [s.id for s in test] == ["vqa_rad-10", "vqa_rad-11", "vqa_rad-12"]
    first = test[0]
    assert first.meta.answer_type == "CLOSED"  # "CLOSED " stripped
    assert first.meta.question_type == "POS, PRES" and first.meta.extra["question_type_raw"] == "POS,PRES"
    assert test[1].meta.question_type == "OTHER"
    assert (first.meta.dataset, first.meta.split, first.meta.language) == ("vqa_rad", "test", "en")
    assert first.question == "Is there evidence of an aortic aneurysm?" and first.answer == "yes"
    assert first.images == ["synpic2.jpg"] and first.image_root == str(osf_dir / "VQA_RAD Image Folder")
    assert first.meta.extra["phrase_type"] == "test_freeform" and "question_frame" not in first.meta.extra  # "NULL"


def test_paraphrases_can_be_excluded(osf_dir: Path) -> None:
    test, _ = read_source("vqa_rad", str(osf_dir), "test", paraphrases=False)
    assert [s.meta.source_id for s in test] == ["10", "12"]
    train, _ = read_source("vqa_rad", str(osf_dir), "training", paraphrases=False)  # split alias
    assert [s.meta.source_id for s in train] == ["0", "2"]


def test_question_type_normalisation() -> None:
    assert normalise_question_type(" pos ,PRES ") == "POS, PRES"
    assert normalise_question_type("Other") == "OTHER" and normalise_question_type("ATRIB") == "ATRIB"


MEVF_RECORDS = [  # qids renumbered, phrase_type without the test_ prefix
    {"qid": 1, "image_name": "synpic2.jpg", "image_organ": "CHEST", "answer": "yes", "answer_type": "CLOSED",
     "question_type": "PRES", "question": "Is there evidence of an aortic aneurysm?", "phrase_type": "freeform"},
    {"qid": 2, "image_name": "synpic2.jpg", "image_organ": "CHEST", "answer": "yes", "answer_type": "CLOSED",
     "question_type": "PRES", "question": "Is an aortic aneurysm present?", "phrase_type": "para"},
]


def test_mevf_keeps_its_qids_without_the_osf_file(tmp_path: Path) -> None:
    path = write_json(tmp_path / "mevf" / "testset.json", MEVF_RECORDS)
    samples, _ = read_source("vqa_rad", str(path), "test")
    assert [s.meta.source_id for s in samples] == ["1", "2"] and samples[0].id == "vqa_rad-mevf-1"
    assert samples[0].meta.extra["mevf_qid"] == "1" and samples[0].image_root == str(tmp_path / "mevf")
    assert [s.meta.source_id for s in read_source("vqa_rad", str(path), "test", paraphrases=False)[0]] == ["1"]


def test_mevf_maps_to_osf_qids(tmp_path: Path, osf_dir: Path) -> None:
    mevf = write_json(tmp_path / "mevf" / "testset.json", MEVF_RECORDS)
    osf_file = str(osf_dir / "VQA_RAD Dataset Public.json")
    samples, _ = read_source("vqa_rad", str(mevf), "test", osf_json=osf_file)
    assert [(s.meta.source_id, s.meta.extra["mevf_qid"]) for s in samples] == [("10", "1"), ("11", "2")]
    assert samples[0].id == "vqa_rad-10"
    beside = write_json(osf_dir / "testset.json", MEVF_RECORDS)  # OSF JSON beside: mapped automatically
    assert [s.meta.source_id for s in read_source("vqa_rad", str(beside), "test")[0]] == ["10", "11"]
    assert [s.meta.source_id for s in read_source("vqa_rad", str(beside), "test", qid="mevf")[0]] == ["1", "2"]
    unmapped = write_json(tmp_path / "other" / "testset.json",
                          [{**MEVF_RECORDS[0], "qid": 7, "question": "A question OSF does not have?"}])
    with pytest.raises(DataError, match=r"testset.json: record 7: key 'question': no OSF test record"):
        read_source("vqa_rad", str(unmapped), "test", osf_json=osf_file)


def test_mevf_file_for_the_wrong_split_is_refused(tmp_path: Path) -> None:
    path = write_json(tmp_path / "testset.json", MEVF_RECORDS)
    with pytest.raises(DataError, match="holds the 'test' split, not 'train'"):
        read_source("vqa_rad", str(path), "train")
    with pytest.raises(DataError, match="unknown split 'dev2'"):
        read_source("vqa_rad", str(path), "dev2")


@pytest.mark.parametrize("change, key, message", [
    ({"answer": None}, "answer", "value is null"),
    ({"question": ["not", "text"]}, "question", "expected text, got list"),
    ({"answer_type": "MAYBE"}, "answer_type", "answer_type 'MAYBE' is neither OPEN nor CLOSED"),
    ({"phrase_type": "test_other"}, "phrase_type", "unknown phrase_type"),
    ({"image_name": 5}, "image_name", "expected text, got int"),
])
def test_bad_records_name_file_record_and_key(tmp_path: Path, change: dict, key: str, message: str) -> None:
    path = write_json(tmp_path / "VQA_RAD Dataset Public.json", [{**OSF_RECORDS[3], **change}])
    with pytest.raises(DataError) as info:
        read_source("vqa_rad", str(path), "test")
    assert str(info.value).startswith(f"{path}: record 10: key '{key}': {message}")


def test_missing_key_and_duplicates_are_counted_under_skip(tmp_path: Path) -> None:
    missing = {k: v for k, v in OSF_RECORDS[4].items() if k != "answer"}
    path = write_json(tmp_path / "VQA_RAD Dataset Public.json",
                      [OSF_RECORDS[3], missing, OSF_RECORDS[3], OSF_RECORDS[5], "not an object"])
    samples, report = read_source("vqa_rad", str(path), "test", policy="skip")
    assert [s.meta.source_id for s in samples] == ["10", "12"]
    assert [(p.record, p.key, p.message) for p in report.problems] == [
        ("11", "answer", "missing key"), ("10", "qid", "duplicate qid '10'"),
        ("#4", None, "expected an object, got str")]
