"""The roco source: tab-separated side files joined into stage-1 alignment samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvlm.data.sources import read_source
from medvlm.data.sources.roco import BRIEF_INSTRUCTIONS, pick_instruction
from medvlm.errors import DataError

FILES = {
    "captions.txt": "ROCO_00001\t Axial MRI (coronal view).\nROCO_00006\t Coronal CT showing tumor masses.\n"
                    "ROCO_00016\t \n",  # empty caption
    "keywords.txt": "ROCO_00001\t\taxial\tcoronal\tmri\tview\nROCO_00006\t\ttumor\tmass\n",
    "cuis.txt": "ROCO_00001\t\nROCO_00006\t\tC0040395\tC0011334\n",  # ROCO_00001 has an empty list
    "semtypes.txt": "ROCO_00001\t\nROCO_00006\t\tT060\tDiagnostic Procedure\tT047\tDisease or Syndrome\n",
    "dlinks.txt": "ROCO_00001\twget -r ftp://ftp.ncbi.nlm.nih.gov/pub/pmc/oa_package/8d/34/PMC4608653.tar.gz "
                  "-P /path/to/Dir\tcro-0008-0385-g01.jpg\n",
    "licences.txt": "ROCO_ID,PMC_ID,CC\nROCO_00001,PMC4608653_cro-0008-0385-g01.jpg,CC BY-NC\n"
                    "ROCO_00006,PMC4840839_ol-11-05-3298-g02.jpg,CC BY\n",
}


@pytest.fixture()
def roco_root(tmp_path: Path) -> Path:
    folder = tmp_path / "data" / "test" / "radiology"
    folder.mkdir(parents=True)
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    return tmp_path / "data"


def test_captions_become_alignment_samples(roco_root: Path) -> None:
    samples, report = read_source("roco", str(roco_root), "test", policy="skip")
    assert [s.id for s in samples] == ["roco-ROCO_00001", "roco-ROCO_00006"]
    assert [(p.record, p.key, p.message) for p in report.problems] == [("ROCO_00016", "caption", "empty caption")]
    first, second = samples
    assert first.answer == "Axial MRI (coronal view)."  # the space after the tab is not part of the caption
    assert first.turns[0].text == f"<image>\n{pick_instruction('ROCO_00001', 0)}"
    assert first.turns[0].text.split("\n")[1] in BRIEF_INSTRUCTIONS
    assert first.images == ["images/ROCO_00001.jpg"] and first.image_root == str(roco_root / "test" / "radiology")
    assert first.meta.extra["keywords"] == ["axial", "coronal", "mri", "view"] and first.meta.extra["cuis"] == []
    assert first.meta.extra["licence"] == "CC BY-NC" and first.meta.extra["pmc_image"].startswith("PMC4608653_")
    assert first.meta.extra["archive_url"].endswith("PMC4608653.tar.gz")
    assert first.meta.extra["archive_image"] == "cro-0008-0385-g01.jpg"
    assert second.meta.extra["semtypes"] == [["T060", "Diagnostic Procedure"], ["T047", "Disease or Syndrome"]]
    assert "archive_url" not in second.meta.extra and first.meta.answer_type is None


def test_instruction_choice_and_licence_filter(roco_root: Path) -> None:
    folder = str(roco_root / "test" / "radiology")
    fixed, _ = read_source("roco", folder, "test", policy="skip", instruction="Describe the image.")
    assert {s.turns[0].text for s in fixed} == {"<image>\nDescribe the image."}
    assert pick_instruction("ROCO_00001", 0) == pick_instruction("ROCO_00001", 0)  # deterministic
    assert len({pick_instruction(f"ROCO_{i:05d}", 0) for i in range(200)}) == len(BRIEF_INSTRUCTIONS)
    cc_by, _ = read_source("roco", folder, "test", policy="skip", licences=["CC BY"])
    assert [s.meta.source_id for s in cc_by] == ["ROCO_00006"]


def test_revised_file_names_and_errors(roco_root: Path, tmp_path: Path) -> None:
    folder = roco_root / "test" / "radiology"
    (folder / "captions.txt").rename(folder / "captions_tp_test_revised.txt")
    samples, _ = read_source("roco", str(folder / "captions_tp_test_revised.txt"), "test", policy="skip")
    assert len(samples) == 2
    (folder / "captions_tp_test_revised.txt").write_text("ROCO_00001 no tab here\n", encoding="utf-8")
    expected = r"captions_tp_test_revised.txt: record line 1: expected 'ROCO_ID<TAB> caption'"
    with pytest.raises(DataError, match=expected):
        read_source("roco", str(folder), "test")
    with pytest.raises(DataError, match="option subset must be one of radiology, non-radiology"):
        read_source("roco", str(roco_root), "test", subset="ct")
    with pytest.raises(DataError, match="unknown split 'train'"):
        read_source("roco", str(roco_root), "train")
