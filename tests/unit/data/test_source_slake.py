"""The slake source on a fixture Slake1.0 folder: languages, key order, masks and detection boxes."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from medvlm.data.sources import read_source
from medvlm.data.sources.slake import mask_labels, read_detection, read_mask
from medvlm.errors import DataError
from tests.helpers.data_fixtures import write_image, write_json


def record(qid, img, question, answer, lang="en", answer_type="OPEN", content="Organ", **more):
    base = {"img_id": int(img.removeprefix("xmlab")), "img_name": f"{img}/source.jpg", "question": question,
            "answer": answer, "q_lang": lang, "location": "Lung", "modality": "CT", "answer_type": answer_type,
            "base_type": "vqa", "triple": ["vhead", "_", "_"], "qid": qid, "content_type": content}
    base.update(more)
    return base


TEST = [
    record(11934, "xmlab102", "What modality is used to take this image?", "CT", content="Modality"),
    # key order varies in the release: content_type before triple
    dict(reversed(list(record(11935, "xmlab102", "Is the lung healthy?", "No", answer_type="CLOSED",
                              content="Abnormality").items()))),
    record(11936, "xmlab102", "这张图片的成像方式是什么?", "CT", lang="zh", content="Modality"),
    record(12276, "xmlab25", "What is the effect of the main organ in this picture?", "Breathe",
           content="KG", base_type="kvqa", triple=["vhead", "effect", "ktail"], modality="X-Ray",
           location="Chest_mediastinal"),
]


@pytest.fixture()
def slake_dir(tmp_path: Path) -> Path:
    root = tmp_path / "Slake1.0"
    write_json(root / "test.json", TEST, ensure_ascii=False)  # the release is raw UTF-8
    write_json(root / "validate.json", [record(1, "xmlab1", "Which organ?", "Lung")], ensure_ascii=False)
    write_image(root / "imgs" / "xmlab102" / "source.jpg", (16, 16))
    mask = Image.new("RGBA", (16, 16), (0, 0, 0, 255))
    mask.putpixel((3, 4), (245, 245, 245, 255))
    mask.save(root / "imgs" / "xmlab102" / "mask.png")
    write_json(root / "imgs" / "xmlab102" / "detection.json", [{"Lung Cancer": [289.0, 301.0, 17.0, 22.0]}])
    write_image(root / "imgs" / "xmlab25" / "source.jpg", (16, 16))
    write_json(root / "imgs" / "xmlab25" / "detection.json", [])  # edge case in the release
    (root / "mask.txt").write_text("30:Left Humerus Head\n245:Lung Cancer", encoding="utf-8")  # no final newline
    return root


def test_english_by_default_with_meta(slake_dir: Path) -> None:
    samples, report = read_source("slake", str(slake_dir), "test")
    assert [s.meta.source_id for s in samples] == ["11934", "11935", "12276"] and report.read == 4
    first, closed, kvqa = samples
    assert (first.meta.modality, first.meta.organ, first.meta.question_type, first.meta.language) == \
        ("CT", "Lung", "Modality", "en")
    assert closed.meta.answer_type == "CLOSED" and closed.meta.question_type == "Abnormality"
    assert kvqa.meta.extra["base_type"] == "kvqa" and kvqa.meta.extra["triple"] == ["vhead", "effect", "ktail"]
    assert kvqa.meta.organ == "Chest_mediastinal" and kvqa.meta.modality == "X-Ray"
    assert first.images == ["xmlab102/source.jpg"] and first.image_root == str(slake_dir / "imgs")
    assert first.meta.extra["mask"] == "xmlab102/mask.png" and first.id == "slake-11934"


def test_language_filter(slake_dir: Path) -> None:
    zh, _ = read_source("slake", str(slake_dir), "test", language="zh")
    assert [s.meta.source_id for s in zh] == ["11936"] and zh[0].question == "这张图片的成像方式是什么?"
    assert zh[0].meta.language == "zh"
    assert len(read_source("slake", str(slake_dir), "test", language="all")[0]) == 4
    with pytest.raises(DataError, match="option language must be one of en, zh, all"):
        read_source("slake", str(slake_dir), "test", language="fr")


def test_split_aliases_and_files(slake_dir: Path) -> None:
    assert len(read_source("slake", str(slake_dir), "val")[0]) == 1  # 'val' is SLAKE's 'validate'
    assert len(read_source("slake", str(slake_dir / "test.json"), "test")[0]) == 3
    with pytest.raises(DataError, match="holds the 'test' split, not 'train'"):
        read_source("slake", str(slake_dir / "test.json"), "train")
    with pytest.raises(DataError, match="no train.json in this folder"):
        read_source("slake", str(slake_dir), "train")


def test_masks_and_detection_boxes(slake_dir: Path) -> None:
    samples, _ = read_source("slake", str(slake_dir), "test")
    assert read_detection(samples[0]) == [("Lung Cancer", (289.0, 301.0, 17.0, 22.0))]
    assert read_detection(samples[2]) == []
    mask = read_mask(samples[0])
    assert mask.mode == "L" and mask.getpixel((3, 4)) == 245 and mask.getpixel((0, 0)) == 0
    assert mask_labels(slake_dir / "mask.txt") == {30: "Left Humerus Head", 245: "Lung Cancer"}
    with pytest.raises(DataError, match="mask file not found"):
        read_mask(samples[2])


def test_bad_records(tmp_path: Path) -> None:
    no_qid = {k: v for k, v in TEST[0].items() if k != "qid"}
    bad_lang = {**TEST[1], "q_lang": "de"}
    bad_triple = {**TEST[0], "qid": 5, "triple": "vhead"}
    path = write_json(tmp_path / "test.json", [no_qid, bad_lang, TEST[0], TEST[0], bad_triple])
    samples, report = read_source("slake", str(path), "test", policy="skip")
    assert [s.meta.source_id for s in samples] == ["11934"]
    assert [(p.record, p.key, p.message) for p in report.problems] == [
        ("#0", "qid", "missing key"), ("11935", "q_lang", "unknown q_lang 'de' (expected en or zh)"),
        ("11934", "qid", "duplicate qid '11934'"), ("5", "triple", "expected a list of strings")]
    only_lang = write_json(tmp_path / "validate.json", [bad_lang])
    with pytest.raises(DataError, match=r"validate.json: record 11935: key 'q_lang': unknown q_lang 'de'"):
        read_source("slake", str(only_lang), "validate")
