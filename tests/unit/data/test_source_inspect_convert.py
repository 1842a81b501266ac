"""data inspect / data convert, image validation before training, and bad input at the command line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medvlm.cli import main
from medvlm.data.convert import convert_dataset
from medvlm.data.images import check_images, to_rgb
from medvlm.data.inspect import inspect_dataset
from medvlm.data.reading import read_samples
from medvlm.data.sources import read_source
from medvlm.errors import DataError
from medvlm.recipe import SourceSpec
from tests.helpers.data_fixtures import OSF_RECORDS, osf, write_image, write_json

OSF_FILE = "VQA_RAD Dataset Public.json"


@pytest.fixture()
def vqa_dir(tmp_path: Path) -> Path:
    """OSF VQA-RAD with one good, one missing, one corrupt image, an escaping and an absolute path."""
    root = tmp_path / "vqa"
    records = OSF_RECORDS + [
        osf(20, "test_freeform", "missing.jpg", "Is it there?", "no", "CLOSED", organ="ABD"),
        osf(21, "test_freeform", "corrupt.jpg", "Is it readable?", "no", "CLOSED", organ="ABD"),
        osf(22, "test_freeform", "../outside.jpg", "Is it outside?", "no", "CLOSED", organ="ABD"),
        osf(23, "test_freeform", "/etc/hostname", "Is it absolute?", "no", "CLOSED", organ="ABD"),
        {**osf(24, "test_freeform", "synpic2.jpg", "Bad type?", "no", "CLOSED"), "answer": ["no"]},
    ]
    write_json(root / OSF_FILE, records)
    images = root / "VQA_RAD Image Folder"
    for name in ("synpic1.jpg", "synpic2.jpg", "synpic3.jpg"):
        write_image(images / name)
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    write_image(root / "outside.jpg")  # exists, but outside the image root
    return root


def test_inspect_counts_and_lists_every_problem(vqa_dir: Path) -> None:
    result = inspect_dataset("vqa_rad", str(vqa_dir / OSF_FILE), "test")
    counts = result["counts"]
    assert result["records_read"] == 11 and result["samples"] == 7 and result["skipped_records"] == 1
    assert counts["total"] == 7 and counts["answer_type"] == {"CLOSED": 6, "OPEN": 1}
    assert counts["organ"] == {"ABD": 5, "CHEST": 2} and counts["language"] == {"en": 7}
    assert counts["question_type"]["POS, PRES"] == 1 and counts["modality"] == {"(unset)": 7}
    assert result["images"] | {"dicom_modalities": None} == {
        "mode": "header", "referenced": 4, "present": 2, "missing": 1, "unreadable": 1, "refused": 2,
        "dicom_files": 0, "dicom_modalities": None}
    problems = {(p["record"], p["key"]): p["message"] for p in result["problems"]}
    assert problems[("24", "answer")].startswith("expected text, got list")
    assert problems[("20", "image")].startswith("image file not found")
    assert problems[("21", "image")].startswith("cannot decode image")
    assert "'../outside.jpg' leaves the image root" in problems[("22", "image")]
    assert "'/etc/hostname' is absolute" in problems[("23", "image")]
    assert len(problems) == 5 and result["sha256"] and len(result["sha256"]) == 64


def test_inspect_command_text_json_and_strict(vqa_dir: Path, capsys) -> None:
    path = str(vqa_dir / OSF_FILE)
    assert main(["data", "inspect", "--dataset", "vqa_rad", "--path", path, "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "samples 3" in text and "answer_type: CLOSED 2 · OPEN 1" in text and "problems: 0 (none)" in text
    assert main(["data", "inspect", "--dataset", "vqa_rad", "--path", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["answer_type"] == {"CLOSED": 6, "OPEN": 1}
    assert main(["data", "inspect", "--dataset", "vqa_rad", "--path", path, "--max-problems", "2"]) == 0
    assert "… 3 more (use --json for all)" in capsys.readouterr().out
    assert main(["data", "inspect", "--dataset", "vqa_rad", "--path", path, "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"medvlm: error: {path}: record 24: key 'answer': 5 problem(s), the first")


def test_convert_round_trips_through_the_llava_source(vqa_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "converted" / "test.json"
    summary = convert_dataset("vqa_rad", str(vqa_dir), "test", out, policy="skip", prompt_style="llava_med_closed")
    # a missing and a corrupt image, two escaping paths, one bad answer: converted files point at good images only
    assert summary["records"] == 7 - 4 and summary["skipped"] == 5
    assert summary["image_root"] == str((vqa_dir / "VQA_RAD Image Folder").resolve())
    records = json.loads(out.read_text())
    first = records[0]
    assert first["id"] == "10" and first["image"] == "synpic2.jpg" and first["answer_type"] == "CLOSED"
    assert first["question_type"] == "POS, PRES" and first["organ"] == "CHEST" and first["dataset"] == "vqa_rad"
    assert first["conversations"] == [
        {"from": "human", "value": "Is there evidence of an aortic aneurysm? Please choose from the following two "
                                   "options: [yes, no]\n<image>"},
        {"from": "gpt", "value": "yes"}]
    assert records[2]["conversations"][0]["value"] == "What organ is shown?\n<image>"  # open: no suffix
    back, report = read_source("llava", str(out), "test", image_root=summary["image_root"])
    original, _ = read_source("vqa_rad", str(vqa_dir), "test", policy="skip")
    assert report.skipped == 0 and [s.meta.source_id for s in back] == [s.meta.source_id for s in original][:3]
    for converted, source in zip(back, original[:3], strict=True):
        assert (converted.answer, converted.meta.answer_type, converted.meta.question_type, converted.meta.organ) == \
            (source.answer, source.meta.answer_type, source.meta.question_type, source.meta.organ)
    assert check_images(back[:3], "decode").bad == {}  # the reported image root resolves the paths

    lines = tmp_path / "short.jsonl"
    convert_dataset("vqa_rad", str(vqa_dir), "train", lines, prompt_style="short_answer", image_position="front")
    rows = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["0", "1", "2"]
    assert rows[0]["conversations"][0]["value"] == \
        "<image>\nAre regions of the brain infarcted?\nAnswer the question using a single word or phrase."


def drop_bad_answer(vqa_dir: Path) -> Path:
    """The fixture without its bad-type record, so the image problems come first."""
    records = [r for r in json.loads((vqa_dir / OSF_FILE).read_text()) if r["qid"] != 24]
    write_json(vqa_dir / OSF_FILE, records)
    return vqa_dir


def test_convert_command_bad_inputs_exit_2(vqa_dir: Path, tmp_path: Path, capsys) -> None:
    out = str(tmp_path / "o.json")
    drop_bad_answer(vqa_dir)
    assert main(["data", "convert", "--dataset", "vqa_rad", "--path", str(vqa_dir), "--output", out]) == 2
    err = capsys.readouterr().err
    assert f"{vqa_dir}: record 20: key 'image': image file not found" in err  # images checked as training does
    assert not Path(out).exists()  # nothing half-written
    wrong_type = write_json(tmp_path / "wrong" / OSF_FILE, [{**OSF_RECORDS[3], "question": 42}])
    assert main(["data", "convert", "--dataset", "vqa_rad", "--path", str(wrong_type), "--output", out]) == 2
    assert f"{wrong_type}: record 10: key 'question': expected text, got int" in capsys.readouterr().err
    assert main(["data", "convert", "--dataset", "vqa_rad", "--path", str(vqa_dir), "--output", out,
                 "--on-bad-record", "skip"]) == 0
    captured = capsys.readouterr()
    assert "wrote 3 record(s)" in captured.out and "skipped 4 bad record(s)" in captured.err  # + missing, unreadable
    assert main(["data", "convert", "--dataset", "vqa_rad", "--path", str(vqa_dir), "--output", out,
                 "--image-check", "none"]) == 2
    assert f"{vqa_dir}: record 22: key 'image': image path '../outside.jpg' leaves the image root" in \
        capsys.readouterr().err  # escaping its root is refused whatever the check


def test_truncated_json_exits_2_from_a_real_process(tmp_path: Path) -> None:
    truncated = tmp_path / "test.json"
    truncated.write_text(json.dumps([{"img_name": "xmlab1/source.jpg", "qid": 1}] * 3)[:-25])
    result = subprocess.run([sys.executable, "-m", "medvlm", "data", "convert", "--dataset", "slake", "--path",
                             str(truncated), "--output", str(tmp_path / "o.json")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{truncated}: not valid JSON at line 1 column" in result.stderr


def test_training_pre_pass_reports_bad_images(vqa_dir: Path, tmp_path: Path) -> None:
    good = SourceSpec(dataset="vqa_rad", path=str(drop_bad_answer(vqa_dir)), split="test",
                      options={"paraphrases": False})
    with pytest.raises(DataError, match=r"record 20: key 'image': image file not found"):
        read_samples([good], policy="error")
    samples, reports = read_samples([good], policy="skip")
    assert [s.meta.source_id for s in samples] == ["10", "12"]
    report = reports[0]
    assert report["kept"] == 2 and report["skipped"] == 4 and report["images"]["missing"] == 1
    assert any("record 21: key 'image': cannot decode image" in p for p in report["problems"])
    # 'exists' does not open files: the corrupt JPEG passes it, 'decode' catches a header-valid truncated one
    assert len(read_samples([good], policy="skip", image_check="exists")[0]) == 3
    jpeg = tmp_path / "full.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg)
    shutil.copy(jpeg, vqa_dir / "VQA_RAD Image Folder" / "synpic3.jpg")
    (vqa_dir / "VQA_RAD Image Folder" / "synpic3.jpg").write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    assert len(read_samples([good], policy="skip", image_check="header")[0]) == 2
    assert [s.meta.source_id for s in read_samples([good], policy="skip", image_check="decode")[0]] == ["10"]


def test_pillow_modes_become_rgb() -> None:
    wide = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))
    assert np.asarray(to_rgb(wide))[..., 0].tolist() == [[0, 64], [128, 255]]
    rgba = Image.new("RGBA", (2, 1), (200, 100, 50, 0))
    rgba.putpixel((1, 0), (200, 100, 50, 255))
    assert np.asarray(to_rgb(rgba)).tolist() == [[[0, 0, 0], [200, 100, 50]]]  # transparent → black
    palette = Image.new("P", (2, 1), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0])
    palette.info["transparency"] = 0
    assert to_rgb(palette).getpixel((0, 0)) == (255, 0, 0)
    grey = Image.fromarray(np.array([[0.5, 1.5]], dtype=np.float32), "F")
    assert np.asarray(to_rgb(grey))[..., 0].tolist() == [[0, 255]]
