"""Images: pixel bombs, bad images under the skip policy; PHI: embedded DICOM never cached as DICOM."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from medvlm.data.images import check_images, load_image
from medvlm.data.sources import read_source
from medvlm.errors import DataError
from tests.helpers.data_fixtures import write_image


def _png_declaring(path: Path, width: int, height: int) -> Path:
    """A valid PNG header declaring a huge canvas, with a few bytes of data (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("side", "message"), [
    (10_000, "is 10000×10000 = 100,000,000 pixels, over the limit of"),  # Pillow itself would only warn
    (100_000, "could be decompression bomb DOS attack"),  # Pillow's own error, reported as a bad image
])
def test_pixel_bombs_are_refused_naming_the_file(tmp_path: Path, side: int, message: str) -> None:
    bomb = _png_declaring(tmp_path / "scan.png", side, side)
    with pytest.raises(DataError, match=rf"train.json: record 3: key 'image': .*{bomb}") as info:
        load_image(bomb, file="train.json", record="3")
    assert len(str(info.value)) < 400 and message in str(info.value)


def test_the_pixel_limit_is_checked_from_the_header(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDVLM_MAX_IMAGE_PIXELS", "1000")
    image = write_image(tmp_path / "big.png", size=(40, 40))
    with pytest.raises(DataError, match=r"is 40×40 = 1,600 pixels, over the limit of 1,000"):
        load_image(image)


def _records(tmp_path: Path) -> Path:
    write_image(tmp_path / "good.png")
    _png_declaring(tmp_path / "bomb.png", 100_000, 100_000)
    data = tmp_path / "test.json"
    data.write_text(json.dumps([
        {"id": qid, "image": image, "conversations": [{"from": "human", "value": "<image>\nColour?"},
                                                     {"from": "gpt", "value": "red"}]}
        for qid, image in (("1", "good.png"), ("2", "bomb.png"), ("3", "missing.png"))]))
    return data


def test_predict_skip_policy_skips_and_counts_bad_images(cli, tmp_path: Path, micro_model_dir: Path) -> None:
    data = _records(tmp_path)
    answers = tmp_path / "answers.jsonl"
    predict = ("predict", "--model", micro_model_dir, "--dataset", "llava", "--path", data, "--output", answers,
               "--max-new-tokens", "2")
    cli(*predict).refused(f"{data}: record 2: key 'image':", "bomb", within=5)
    result = cli(*predict, "--on-bad-record", "skip")
    assert result.status == 0 and "wrote 1 answer(s)" in result.out
    assert "skipped 2 bad record(s)" in result.err
    assert [json.loads(line)["question_id"] for line in answers.read_text().splitlines()] == [1]


def test_data_convert_checks_images(cli, tmp_path: Path) -> None:
    data = _records(tmp_path)
    out = tmp_path / "converted.json"
    cli("data", "convert", "--dataset", "llava", "--path", data, "--output", out).refused(
        f"{data}: record 2: key 'image':", within=5)
    assert not out.exists()


def _bare_data_set(source: Path) -> bytes:
    """The DICOM data set without preamble, 'DICM' marker or file meta (pydicom still reads it)."""
    dataset = dcmread(source)
    dataset.preamble = None
    del dataset.file_meta
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=False, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


@pytest.mark.parametrize("form", ["file", "bare data set"])
def test_embedded_dicom_is_cached_as_pixels_only(tmp_path: Path, form: str) -> None:
    source = Path(get_testdata_file("CT_small.dcm"))
    dataset = dcmread(source)
    phi = [str(dataset.PatientName), str(dataset.PatientID), str(dataset.get("InstitutionName", ""))]
    phi = [value for value in phi if len(value) >= 3]
    assert phi  # the test file carries identifying values to leak
    data = source.read_bytes() if form == "file" else _bare_data_set(source)
    assert data[128:132] == (b"DICM" if form == "file" else b"1.4.") and phi[0].encode() in data
    table = pa.table({"question": ["Is this a CT?"], "answer": ["yes"],
                      "image": [{"bytes": data, "path": "scan.dcm"}]})
    pq.write_table(table, tmp_path / "test.parquet")
    cache = tmp_path / "cache"
    samples, _ = read_source("hf", str(tmp_path / "test.parquet"), "test", image_cache=str(cache))
    files = sorted(cache.iterdir())
    assert [f.suffix for f in files] == [".png"] and samples[0].images == [files[0].name]
    content = files[0].read_bytes()
    assert content.startswith(b"\x89PNG") and not any(value.encode() in content for value in phi)
    assert b"DICM" not in content
    assert check_images(samples, "decode").bad == {}
    assert load_image(files[0]).size == (dataset.Columns, dataset.Rows)


def test_embedded_bytes_that_are_no_image_are_refused_and_never_cached(tmp_path: Path) -> None:
    table = pa.table({"question": ["Is this a CT?"], "answer": ["yes"],
                      "image": [{"bytes": b"PatientName=Doe^Jane " * 20, "path": "scan.bin"}]})
    pq.write_table(table, tmp_path / "test.parquet")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"key 'image': neither a raster image .* nor DICOM"):
        read_source("hf", str(tmp_path / "test.parquet"), "test", image_cache=str(cache))
    assert not cache.exists() or not any(cache.iterdir())


def test_a_stored_run_recipe_cannot_switch_on_remote_code(tmp_path: Path, caplog) -> None:
    import logging

    import yaml

    from medvlm.model.export import resolve_source

    run = tmp_path / "downloaded-run"
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump({"model": {"path": str(tmp_path / "evil"),
                                                                        "trust_remote_code": True}}))
    with caplog.at_level(logging.WARNING, logger="medvlm"):
        source = resolve_source(run)
    assert source.recipe is not None and source.recipe.model.trust_remote_code is False
    assert "ignoring model.trust_remote_code from the run's stored recipe" in caplog.text


def test_an_image_that_fails_only_at_decoding_is_named_with_its_data_file(cli, tmp_path: Path,
                                                                          micro_model_dir: Path) -> None:
    """A truncated PNG passes predict's header check and fails when the batch is decoded: the error named
    the record and the image but not the data file."""
    import numpy as np
    from PIL import Image

    image = tmp_path / "trunc.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    image.write_bytes(image.read_bytes()[:-2000])  # header intact, pixel data cut short
    data = tmp_path / "test.json"
    data.write_text(json.dumps([{"id": "1", "image": "trunc.png", "conversations": [
        {"from": "human", "value": "<image>\nColour?"}, {"from": "gpt", "value": "red"}]}]))
    cli("predict", "--model", micro_model_dir, "--dataset", "llava", "--path", data, "--output",
        tmp_path / "answers.jsonl", "--max-new-tokens", "2").refused(f"{data}: record 1: key 'image': cannot decode",
                                                                     within=30)
