"""The readers on the real published files (MEDVLM_REAL_DATA): counts, ids, joins and images."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from medvlm.cli import main
from medvlm.data.images import ImagePreparer, check_images, load_image, resolve_image_path
from medvlm.data.inspect import inspect_dataset
from medvlm.data.sources import read_source
from medvlm.data.sources.slake import read_detection, read_mask

pytestmark = pytest.mark.realdata

OSF = "vqa_rad/osf_original/VQA_RAD Dataset Public.json"
MEVF = "vqa_rad/mevf_split/testset.json"
SLAKE = "slake/Slake1.0"
PATHVQA = "pathvqa/UCSD-AI4H_official_lxmert_format/pvqa_test.json"
QA50 = "llava_med/data/eval/llava_med_eval_qa50_qa.jsonl"
ROCO = "pmc_captions/roco/data/test/radiology"
ANSWER_FILES = ["answer-file-llava-zeorshot.jsonl", "answer-file.jsonl", "answer-file-1epoch.jsonl"]


@pytest.mark.parametrize("dataset, path, split, options, total, answer_types", [
    ("vqa_rad", OSF, "test", {}, 451, {"CLOSED": 272, "OPEN": 179}),
    ("vqa_rad", OSF, "train", {}, 1797, {"CLOSED": 1027, "OPEN": 770}),
    ("vqa_rad", MEVF, "test", {}, 451, {"CLOSED": 272, "OPEN": 179}),
    ("slake", SLAKE, "test", {}, 1061, {"OPEN": 645, "CLOSED": 416}),
    ("slake", SLAKE, "test", {"language": "all"}, 2094, None),
    ("pathvqa", PATHVQA, "test", {}, 6761, {"CLOSED": 3391, "OPEN": 3370}),
    ("llava_med", QA50, "test", {}, 193, {"(unset)": 193}),
    ("roco", ROCO, "test", {}, 100, {"(unset)": 100}),
])
def test_published_counts(real_data: Path, dataset: str, path: str, split: str, options: dict, total: int,
                          answer_types: dict | None) -> None:
    result = inspect_dataset(dataset, str(real_data / path), split, image_check="exists", options=options)
    assert result["samples"] == total and result["skipped_records"] == 0
    if answer_types is not None:
        assert result["counts"]["answer_type"] == answer_types
    problems = {p["key"] for p in result["problems"]}
    assert problems <= {"image"}  # the only problems in the real files: images not kept in the sample


def test_inspect_command_on_the_real_vqa_rad_test_split(real_data: Path, capsys) -> None:
    assert main(["data", "inspect", "--dataset", "vqa_rad", "--path", str(real_data / OSF), "--split", "test",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["counts"]["answer_type"] == {"CLOSED": 272, "OPEN": 179}
    assert result["counts"]["organ"] == {"CHEST": 174, "ABD": 158, "HEAD": 119}
    assert result["images"]["referenced"] == 203 and result["images"]["present"] == 30
    assert result["sha256"] == "948b7156059b864cf72344fb10669233526b175c243e5a046d20d4201d297a95"
    assert len(result["problems"]) == 451 - 128  # every test question whose image is not in the sample


def test_real_meta_and_ids(real_data: Path) -> None:
    test, _ = read_source("vqa_rad", str(real_data / OSF), "test")
    by_id = {s.meta.source_id: s for s in test}
    assert len(by_id) == 451
    first = by_id["10"]
    assert (first.question, first.answer, first.meta.organ, first.images) == (
        "Is there evidence of an aortic aneurysm?", "yes", "CHEST", ["synpic42202.jpg"])
    train, _ = read_source("vqa_rad", str(real_data / OSF), "train")
    assert train[0].meta.source_id == "0"  # the string qid
    assert {s.meta.source_id: s.answer for s in train}["2234"] == "12"  # an int answer
    types = Counter(s.meta.question_type for s in train + test)
    assert types["OTHER"] == 196 and "Other" not in types and types["POS, PRES"] == 6  # 194 + 2 "Other"
    slake, _ = read_source("slake", str(real_data / SLAKE), "test")
    sample = next(s for s in slake if s.meta.source_id == "11934")
    assert (sample.meta.modality, sample.meta.organ, sample.meta.question_type, sample.meta.language) == \
        ("CT", "Lung", "Modality", "en")
    assert Counter(s.meta.modality for s in slake) == {"CT": 472, "X-Ray": 361, "MRI": 228}


def test_mevf_split_maps_onto_osf_qids(real_data: Path) -> None:
    osf, _ = read_source("vqa_rad", str(real_data / OSF), "test")
    mevf, _ = read_source("vqa_rad", str(real_data / MEVF), "test", osf_json=str(real_data / OSF))
    renumbered, _ = read_source("vqa_rad", str(real_data / MEVF), "test")
    assert {s.meta.source_id for s in mevf} == {s.meta.source_id for s in osf}
    answers = {s.meta.source_id: s.answer for s in osf}
    assert all(answers[s.meta.source_id] == s.answer for s in mevf)
    # every MEVF qid differs from the OSF qid of the same question (SOURCES.md's "444 of 451" counts otherwise)
    assert sum(s.meta.source_id != s.meta.extra["mevf_qid"] for s in mevf) == 451
    assert [s.meta.source_id for s in renumbered] == [s.meta.extra["mevf_qid"] for s in mevf]


@pytest.mark.parametrize("name", ANSWER_FILES)
def test_llava_med_answer_files_join_on_osf_qids(real_data: Path, name: str) -> None:
    from medvlm.eval.score import read_answers, score

    samples, _ = read_source("vqa_rad", str(real_data / OSF), "test")
    result = score(samples, read_answers(real_data / "llava_med/llava/eval/eval_metrics" / name))
    assert result["n"] == 451 and result["missing_predictions"]["count"] == 0
    assert result["metrics"]["strict"]["n_closed"] == 272


def test_qa50_and_roco(real_data: Path) -> None:
    qa50, _ = read_source("llava_med", str(real_data / QA50), "test")
    assert Counter(s.meta.question_type for s in qa50) == {"conversation": 143, "detailed_description": 50}
    assert sum(s.meta.extra["in_text_mention"] is None for s in qa50) == 14
    roco, _ = read_source("roco", str(real_data / ROCO), "test")
    assert Counter(s.meta.extra.get("licence") for s in roco) == {
        "CC BY": 34, "CC BY-NC": 20, "NO-CC CODE": 20, "CC BY-NC-SA": 17, "CC BY-NC-ND": 9}
    assert roco[0].answer == "Axial MRI (coronal view)." and roco[0].meta.extra["keywords"] == \
        ["axial", "coronal", "mri", "view"]


def test_every_present_image_loads(real_data: Path, micro_model) -> None:
    preparer = ImagePreparer(micro_model[1].image_processor, "pad")
    samples = []
    for split in ("train", "test"):
        samples += read_source("vqa_rad", str(real_data / OSF), split)[0]
    for split in ("train", "validate", "test"):
        samples += read_source("slake", str(real_data / SLAKE), split, language="all")[0]
    present = {}
    for sample in samples:
        path = resolve_image_path(sample.images[0], sample.image_root)
        if path.is_file():
            present.setdefault(path, sample)
    # resolved as image paths are (the data folder may be reached through a link)
    vqa_files = {p.resolve() for p in (real_data / "vqa_rad/osf_original/VQA_RAD Image Folder").glob("*.jpg")}
    slake_files = {p.resolve() for p in (real_data / SLAKE / "imgs").glob("*/source.jpg")}
    assert set(present) == vqa_files | slake_files and len(vqa_files) == 30 and len(slake_files) == 19
    for path, sample in present.items():
        image = load_image(path, record=sample.id)
        assert image.mode == "RGB" and min(image.size) >= 200
        assert tuple(preparer([image]).shape) == (1, 3, 16, 16)
        if sample.meta.dataset == "slake":
            mask = read_mask(sample)
            assert mask.size == image.size and mask.mode == "L"
            assert all(len(box) == 4 for _, box in read_detection(sample))
    check = check_images(samples, "decode")
    assert check.present == 49 and check.unreadable == 0 and check.refused == 0
