"""The synthetic generator: determinism, balance, answerability, the source."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medvlm.data.sources import read_source
from medvlm.data.synthetic import (
    SUBSETS,
    Scan,
    ShapeScene,
    SyntheticSpec,
    materialise,
    render_scan,
    render_shapes,
    sample_scan,
    scan_vqa,
)
from medvlm.errors import DataError

SPEC = SyntheticSpec(seed=3, general_images={"train": 12, "test": 4}, medical_images={"train": 12, "test": 4})


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a, b = materialise(tmp_path / "a", SPEC), materialise(tmp_path / "b", SPEC)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert {f"{subset}_{split}.json" for subset in SUBSETS for split in ("train", "test")} <= {str(f) for f in files}
    other = materialise(tmp_path / "c", SyntheticSpec(seed=4, general_images=SPEC.general_images,
                                                      medical_images=SPEC.medical_images))
    assert (a / "medical_vqa_train.json").read_bytes() != (other / "medical_vqa_train.json").read_bytes()


def test_changing_the_test_count_keeps_the_train_split(tmp_path: Path) -> None:
    more_test = SyntheticSpec(seed=3, general_images={"train": 12, "test": 9}, medical_images={"train": 12, "test": 9})
    a, b = materialise(tmp_path / "a", SPEC), materialise(tmp_path / "b", more_test)
    assert (a / "medical_vqa_train.json").read_bytes() == (b / "medical_vqa_train.json").read_bytes()


def test_a_different_spec_in_the_same_directory_is_refused(tmp_path: Path) -> None:
    materialise(tmp_path / "d", SPEC)
    with pytest.raises(DataError, match="different settings"):
        materialise(tmp_path / "d", SyntheticSpec(seed=9))


def test_rendering_is_deterministic_and_shows_the_scene() -> None:
    scan = Scan("CT", "brain", True, "left", "large")
    first = np.asarray(render_scan(scan, 32, np.random.default_rng(0)))
    again = np.asarray(render_scan(scan, 32, np.random.default_rng(0)))
    assert np.array_equal(first, again) and first.shape == (32, 32, 3)
    healthy = np.asarray(render_scan(Scan("CT", "brain", False, None, None), 32, np.random.default_rng(0)))
    # the lesion (bright) sits on the image's right: the patient's left, radiological convention
    diff = first.astype(int)[..., 0] - healthy.astype(int)[..., 0]
    assert diff[:, 16:].sum() > 5 * abs(diff[:, :16].sum())
    red = np.asarray(render_shapes(ShapeScene("red", "square", 1, "left", "large"), 32, np.random.default_rng(0)))
    reddish = (red[..., 0] > 180) & (red[..., 1] < 100)
    assert reddish[:, :16].sum() > 20 and reddish[:, 16:].sum() == 0


def test_vqa_items_are_answerable_and_balanced() -> None:
    rng = np.random.default_rng(0)
    answers: Counter = Counter()
    kinds: Counter = Counter()
    for _ in range(600):
        scan = sample_scan(rng)
        for qa in scan_vqa(scan, rng):
            kinds[(qa.question_type, qa.answer_type)] += 1
            if qa.answer_type == "CLOSED":
                answers[qa.answer] += 1
            if qa.question_type in ("POS", "SIZE"):
                assert scan.lesion, "side and size are asked only when a lesion is visible"
            if qa.question_type == "MODALITY" and qa.answer_type == "OPEN":
                assert qa.answer == {"CT": "ct", "MRI": "mri", "X-Ray": "x-ray"}[scan.modality]
    assert 0.4 < answers["yes"] / (answers["yes"] + answers["no"]) < 0.6
    assert {qt for qt, _ in kinds} == {"MODALITY", "ORGAN", "PRES", "POS", "SIZE"}


def test_synthetic_source_reads_subsets_with_meta(synthetic_dir: Path, synthetic_options: dict) -> None:
    samples, report = read_source("synthetic", str(synthetic_dir), "test", subset="medical_vqa", **synthetic_options)
    assert report.skipped == 0 and len(samples) == report.read > 0
    first = samples[0]
    assert first.meta.answer_type in ("OPEN", "CLOSED") and first.meta.question_type
    assert first.meta.modality in ("CT", "MRI", "X-Ray") and first.meta.organ in ("brain", "chest", "abdomen")
    assert (Path(first.image_root) / first.images[0]).is_file()
    only_modality, _ = read_source("synthetic", str(synthetic_dir), "test", subset="medical_vqa",
                                   question_types=["modality"], **synthetic_options)
    assert 0 < len(only_modality) < len(samples)
    assert {s.meta.question_type for s in only_modality} == {"MODALITY"}
    records = json.loads((synthetic_dir / "medical_instruct_train.json").read_text())
    assert all(len(r["conversations"]) >= 4 for r in records)  # multi-turn


def test_synthetic_source_rejects_unknown_options(synthetic_dir: Path) -> None:
    with pytest.raises(DataError, match="unknown option"):
        read_source("synthetic", str(synthetic_dir), "test", subset="medical_vqa", colour="red")
    with pytest.raises(DataError, match="unknown subset"):
        read_source("synthetic", str(synthetic_dir), "test", subset="medical_vqaa")
