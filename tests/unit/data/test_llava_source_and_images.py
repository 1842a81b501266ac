"""The LLaVA conversation reader, image loading and path confinement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from medvlm.data.images import ImagePreparer, PixelCache, expand_to_square, load_image, resolve_image_path
from medvlm.data.sources import read_source
from medvlm.errors import DataError


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


RECORDS = [
    {"id": "a", "image": "x.png", "conversations": [
        {"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "A scan."}],
     "answer_type": "CLOSED ", "question_type": "PRES"},
    {"id": "b", "conversations": [{"from": "human", "value": "Hello"}, {"from": "gpt", "value": "Hi."}]},
]


def test_reads_json_and_jsonl_with_text_only_samples(tmp_path: Path) -> None:
    json_file = write_json(tmp_path / "d.json", RECORDS)
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    for path in (json_file, jsonl):
        samples, report = read_source("llava", str(path), "train")
        assert [s.id for s in samples] == ["a", "b"] and report.skipped == 0
        assert samples[0].images == ["x.png"] and samples[0].image_root == str(tmp_path)
        assert samples[0].meta.answer_type == "CLOSED"  # trailing space tolerated
        assert samples[1].images == [] and samples[1].turns[1].text == "Hi."


@pytest.mark.parametrize("record, key, message", [
    ({"id": "r1", "image": "x.png"}, "conversations", "missing key"),
    ({"id": "r1", "conversations": [{"from": "robot", "value": "x"}]}, "conversations[0].from", "unknown speaker"),
    ({"id": "r1", "conversations": [{"from": "human", "value": 7}]}, "conversations[0].value", "expected text"),
    ({"id": "r1", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
     "conversations[0].from", "alternate"),
    ({"id": "r1", "image": 5, "conversations": [{"from": "human", "value": "x"}]}, "image", "image path"),
    ({"id": "r1", "answer_type": "MAYBE", "conversations": [{"from": "human", "value": "x"}]}, "answer_type",
     "neither OPEN nor CLOSED"),
])
def test_bad_records_name_file_record_and_key(tmp_path: Path, record: dict, key: str, message: str) -> None:
    path = write_json(tmp_path / "bad.json", [record])
    with pytest.raises(DataError) as info:
        read_source("llava", str(path), "train")
    text = str(info.value)
    assert str(path) in text and "record r1" in text and f"key '{key}'" in text and message in text


def test_skip_policy_counts_and_lists_problems(tmp_path: Path) -> None:
    path = write_json(tmp_path / "mixed.json", [RECORDS[0], {"id": "bad"}, RECORDS[1], RECORDS[1]])
    samples, report = read_source("llava", str(path), "train", policy="skip")
    assert [s.id for s in samples] == ["a", "b"]
    assert report.read == 4 and report.skipped == 2
    assert sorted(p.message for p in report.problems) == ["duplicate id", "missing key"]
    assert report.summary()["skip_reasons"] == {"missing key": 1, "duplicate id": 1}


def test_corrupt_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"id": "a",\n  "conversations": [}]')
    with pytest.raises(DataError, match=r"broken.json: not valid JSON at line 2 column"):
        read_source("llava", str(path), "train")
    lines = tmp_path / "broken.jsonl"
    lines.write_text(json.dumps(RECORDS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"record line 2: not valid JSON"):
        read_source("llava", str(lines), "train")


def test_image_paths_stay_inside_their_root(tmp_path: Path) -> None:
    root = tmp_path / "images"
    root.mkdir()
    assert resolve_image_path("a/b.png", root) == (root / "a" / "b.png").resolve()
    with pytest.raises(DataError, match="leaves the image root"):
        resolve_image_path("../secret.png", root, file="d.json", record="r7")
    with pytest.raises(DataError, match=r"d.json: record r7: key 'image': image path '/etc/passwd' is absolute"):
        resolve_image_path("/etc/passwd", root, file="d.json", record="r7")
    (tmp_path / "link").symlink_to(tmp_path)
    with pytest.raises(DataError, match="leaves the image root"):
        resolve_image_path("../link/x.png", root)


def test_missing_and_corrupt_images_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image file not found"):
        load_image(tmp_path / "none.png", record="q1")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="cannot decode image"):
        load_image(bad, record="q1")


def test_grayscale_exif_and_padding(tmp_path: Path) -> None:
    gray = Image.new("L", (4, 2), 200)
    gray.save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").mode == "RGB"
    rotated = Image.new("RGB", (6, 2), (255, 0, 0))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise
    rotated.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (2, 6)
    padded = expand_to_square(Image.new("RGB", (4, 2), (0, 0, 0)), (122, 116, 104))
    assert padded.size == (4, 4)
    assert padded.getpixel((0, 0)) == (122, 116, 104) and padded.getpixel((0, 1)) == (0, 0, 0)


def test_pad_mode_fills_with_the_processor_mean(tiny_model) -> None:
    _, processor = tiny_model
    preparer = ImagePreparer(processor.image_processor, "pad")
    assert preparer.fill == (123, 117, 104)  # CLIP mean × 255
    pixels = preparer([Image.new("RGB", (32, 16), (255, 255, 255))])
    assert tuple(pixels.shape) == (1, 3, 32, 32)
    # the padded band (top rows) normalises to ~0: it is the mean colour
    assert float(pixels[0, :, 0].abs().max()) < 0.02
    resized = ImagePreparer(processor.image_processor, "resize")([Image.new("RGB", (32, 16), (255, 255, 255))])
    assert float(resized[0, :, 0].min()) > 1.5  # no padding: white everywhere


def test_pixel_cache_evicts_least_recently_used() -> None:
    import torch

    cache = PixelCache(max_bytes=3 * 4 * 10)
    for key in "abc":
        cache.put(key, torch.zeros(10))
    assert cache.get("a") is not None  # a becomes most recent
    cache.put("d", torch.zeros(10))
    assert cache.get("b") is None and cache.get("a") is not None and cache.used == 120
