"""DICOM decoding over pydicom's bundled files, windowing maths, and PHI never leaving the file."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import pixel_array

from medvlm.data.dicom import (
    CT_PRESETS,
    PHI_KEYWORDS,
    DicomInfo,
    DicomSettings,
    _scrub,
    dicom_info,
    read_dicom,
)
from medvlm.data.images import ImagePreparer, check_images, load_image
from medvlm.errors import DataError
from tests.helpers.data_fixtures import write_json


def bundled(name: str) -> str:
    return get_testdata_file(name)  # bundled names only: others would try a download


def expected_window(values: np.ndarray, centre: float, width: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR windowing, written out independently, to 8 bit."""
    low, high = centre - 0.5 - (width - 1) / 2, centre - 0.5 + (width - 1) / 2
    out = np.where(values <= low, 0.0, np.where(values > high, 1.0, (values - (centre - 0.5)) / (width - 1) + 0.5))
    return np.rint(out * 255).astype(np.uint8)


@pytest.mark.parametrize("name, modality, photometric, size, frames", [
    ("CT_small.dcm", "CT", "MONOCHROME2", (128, 128), 1),
    ("MR_small.dcm", "MR", "MONOCHROME2", (64, 64), 1),
    ("examples_palette.dcm", "US", "PALETTE COLOR", (800, 350), 1),
    ("examples_rgb_color.dcm", "US", "RGB", (320, 240), 1),
    ("examples_ybr_color.dcm", "US", "YBR_FULL_422", (320, 240), 30),  # JPEG baseline, multi-frame
    ("liver_1frame.dcm", "SEG", "MONOCHROME2", (512, 512), 1),  # 1-bit segmentation
    ("rtdose.dcm", "RTDOSE", "MONOCHROME2", (10, 10), 15),  # 32-bit, multi-frame
    ("JPEG2000.dcm", "NM", "MONOCHROME2", (256, 1024), 1),  # JPEG 2000 through Pillow
    ("SC_rgb_rle_2frame.dcm", "OT", "RGB", (100, 100), 2),  # RLE
    ("MR_small_jpeg_ls_lossless.dcm", "MR", "MONOCHROME2", (64, 64), 1),  # JPEG-LS through pylibjpeg
])
def test_bundled_files_decode_to_rgb(name: str, modality: str, photometric: str, size: tuple, frames: int) -> None:
    image, info = read_dicom(bundled(name))
    assert image.mode == "RGB" and image.size == size
    assert (info.modality, info.photometric_interpretation, info.frames, info.frame) == \
        (modality, photometric, frames, frames // 2)
    pixels = np.asarray(image)
    assert pixels.max() > pixels.min()  # not a blank image
    assert load_image(bundled(name)).size == size  # a .dcm path works wherever an image path does


def test_ct_rescale_to_hounsfield_and_presets() -> None:
    ds = pydicom.dcmread(bundled("CT_small.dcm"))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    for preset in ("lung", "mediastinum", "bone", "brain", "abdomen", "liver"):
        image, info = read_dicom(bundled("CT_small.dcm"), {"window": preset})
        assert np.array_equal(np.asarray(image)[..., 0], expected_window(hu, *CT_PRESETS[preset])), preset
        assert info.window == preset
    explicit = np.asarray(read_dicom(bundled("CT_small.dcm"), {"window": [40, 400]})[0])[..., 1]
    assert np.array_equal(explicit, expected_window(hu, 40, 400))
    # no window in the file: min-max of the Hounsfield values
    auto = np.asarray(load_image(bundled("CT_small.dcm")))[..., 2]
    assert np.array_equal(auto, np.rint((hu - hu.min()) / (hu.max() - hu.min()) * 255).astype(np.uint8))


def test_three_window_rgb_mode() -> None:
    channels = np.asarray(read_dicom(bundled("CT_small.dcm"), {"channels": ["lung", "mediastinum", "bone"]})[0])
    for index, preset in enumerate(("lung", "mediastinum", "bone")):
        single = np.asarray(read_dicom(bundled("CT_small.dcm"), {"window": preset})[0])[..., 0]
        assert np.array_equal(channels[..., index], single)
    assert not np.array_equal(channels[..., 0], channels[..., 2])


def test_file_window_and_monochrome1(tmp_path: Path) -> None:
    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
    image, info = read_dicom(bundled("MR_small.dcm"))
    assert info.window == f"file {centre:g},{width:g}"
    assert np.array_equal(np.asarray(image)[..., 0], expected_window(ds.pixel_array.astype(np.float64), centre, width))
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = tmp_path / "mono1.dcm"
    ds.save_as(inverted)
    assert np.array_equal(np.asarray(load_image(inverted)), 255 - np.asarray(image))


def test_modality_and_voi_lut_sequences(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = pydicom.dcmread(bundled("MR_small.dcm"))
    raw = ds.pixel_array.astype(np.int64)
    first, entries = int(raw.min()) + 50, 256
    voi = Dataset()
    voi.LUTDescriptor = [entries, first, 8]
    voi.add_new("LUTData", "US", [min(255, 3 * i) for i in range(entries)])  # LUTData's VR is US or OW
    ds.VOILUTSequence = Sequence([voi])
    path = tmp_path / "voi.dcm"
    ds.save_as(path)
    table = np.array(voi.LUTData)
    expected = table[np.clip(raw - first, 0, entries - 1)].astype(np.uint8)  # 8-bit LUT: values are display values
    image, info = read_dicom(path)
    assert info.window == "file VOI LUT" and np.array_equal(np.asarray(image)[..., 0], expected)

    ct = pydicom.dcmread(bundled("CT_small.dcm"))
    del ct.RescaleSlope, ct.RescaleIntercept
    modality = Dataset()
    modality.LUTDescriptor = [4096, 0, 16]
    modality.add_new("LUTData", "US", [(i * 7) % 4096 for i in range(4096)])
    modality.ModalityLUTType = "HU"
    ct.ModalityLUTSequence = Sequence([modality])
    lut_path = tmp_path / "mlut.dcm"
    ct.save_as(lut_path)
    mapped = np.array(modality.LUTData, dtype=np.float64)[np.clip(ct.pixel_array.astype(np.int64), 0, 4095)]
    got = np.asarray(read_dicom(lut_path, "minmax")[0])[..., 0]
    assert np.array_equal(got, np.rint((mapped - mapped.min()) / (mapped.max() - mapped.min()) * 255).astype(np.uint8))


def test_frames_and_colour() -> None:
    path = bundled("examples_ybr_color.dcm")
    for choice, index in (("middle", 15), ("first", 0), ("last", 29), (3, 3)):
        image, info = read_dicom(path, {"frame": choice})
        assert info.frame == index
        assert np.array_equal(np.asarray(image), pixel_array(path, index=index))  # pydicom's YBR → RGB
    with pytest.raises(DataError, match="frame 30 asked for, but .* has 30 frame"):
        read_dicom(path, {"frame": 30})
    rgb = pydicom.dcmread(bundled("examples_rgb_color.dcm"))
    assert np.array_equal(np.asarray(load_image(bundled("examples_rgb_color.dcm"))), rgb.pixel_array)
    from pydicom.pixels import apply_color_lut

    palette = pydicom.dcmread(bundled("examples_palette.dcm"))
    lut = apply_color_lut(palette.pixel_array, palette)
    scale = 255.0 / (255 if lut.dtype == np.uint8 else 65535)
    expected = np.rint(lut[..., :3] * scale).astype(np.uint8)
    assert np.array_equal(np.asarray(load_image(bundled("examples_palette.dcm"))), expected)


def test_compressed_syntax_without_a_decoder_names_the_package(monkeypatch) -> None:
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: not self.UID.is_encapsulated))
    monkeypatch.setattr(Decoder, "missing_dependencies",
                        property(lambda self: ["pylibjpeg - requires pylibjpeg and pylibjpeg-libjpeg"]))
    with pytest.raises(DataError) as info:
        load_image(bundled("MR_small_jpeg_ls_lossless.dcm"), file="data.json", record="q3")
    text = str(info.value)
    assert text.startswith("data.json: record q3: key 'image': cannot decode JPEG-LS Lossless")
    assert "pip install 'medvlm[dicom]'" in text and "pylibjpeg-libjpeg" in text
    assert load_image(bundled("MR_small.dcm")).size == (64, 64)  # native syntaxes need no plugin


def test_files_without_images_and_broken_files(tmp_path: Path) -> None:
    expected = r"d.json: record r1: key 'image': DICOM file has no pixel data \(modality RTPLAN\)"
    with pytest.raises(DataError, match=expected):
        load_image(bundled("rtplan.dcm"), file="d.json", record="r1")
    with pytest.raises(DataError, match="DICOM file has no image"):
        dicom_info(bundled("rtplan.dcm"))
    with pytest.raises(DataError, match="cannot decode Explicit VR Little Endian pixel data"):
        load_image(bundled("MR_truncated.dcm"))
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"not dicom at all" * 20)
    with pytest.raises(DataError, match="not a DICOM file"):
        load_image(fake)
    # a DICOM file without a suffix is still recognised by its DICM marker
    plain = tmp_path / "IM0001"
    shutil.copy(bundled("MR_small.dcm"), plain)
    assert load_image(plain).size == (64, 64)


def test_dicom_without_pixel_data_exits_2(tmp_path: Path, capsys) -> None:
    from medvlm.cli import main
    from medvlm.data.reading import read_samples
    from medvlm.recipe import SourceSpec

    shutil.copy(bundled("rtplan.dcm"), tmp_path / "plan.dcm")  # a radiotherapy plan: no image at all
    data = write_json(tmp_path / "d.json", [{"id": "p7", "image": "plan.dcm", "conversations": [
        {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A plan."}]}])
    for check in ("header", "decode"):
        assert main(["data", "inspect", "--dataset", "llava", "--path", str(data), "--image-check", check,
                     "--strict"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"medvlm: error: {data}: record p7: key 'image': ") and "DICOM file has no" in err
    with pytest.raises(DataError, match=r"d.json: record p7: key 'image': DICOM file has no image"):
        read_samples([SourceSpec(dataset="llava", path=str(data))], policy="error")  # the training pre-pass


@pytest.mark.parametrize("value, message", [
    ({"window": "lungs"}, "unknown window 'lungs'"),
    ({"window": [40, 0]}, "width > 0"),
    ({"channels": ["lung", "bone"]}, "three windows"),
    ({"frame": "middle-ish"}, "frame must be"),
    ({"windw": "lung"}, "unknown DICOM setting"),
])
def test_bad_settings(value, message) -> None:
    with pytest.raises(DataError, match=message):
        DicomSettings.parse(value)


def test_source_option_reaches_pixels(tmp_path: Path, micro_model) -> None:
    from medvlm.data.collate import load_sample_pixels
    from medvlm.data.images import PixelCache
    from medvlm.data.sources import read_source

    shutil.copy(bundled("CT_small.dcm"), tmp_path / "ct.dcm")
    data = write_json(tmp_path / "d.json", [{"id": "c1", "image": "ct.dcm", "conversations": [
        {"from": "human", "value": "<image>\nWhat modality?"}, {"from": "gpt", "value": "CT"}]}])
    lung, _ = read_source("llava", str(data), "train", dicom={"window": "lung"})
    bone, _ = read_source("llava", str(data), "train", dicom="bone")
    assert lung[0].meta.extra["dicom"]["window"] == "lung"
    with pytest.raises(DataError, match=r"d.json: option key 'dicom.window': unknown window"):
        read_source("llava", str(data), "train", dicom={"window": "lungs"})
    preparer = ImagePreparer(micro_model[1].image_processor, "pad")
    cache = PixelCache(1 << 20)
    first = load_sample_pixels(lung[0], preparer, cache)
    second = load_sample_pixels(bone[0], preparer, cache)
    assert first.shape == (1, 3, 16, 16) and len(cache._items) == 2  # the settings are part of the cache key
    assert not np.allclose(first.numpy(), second.numpy())


# --------------------------------------------------------------------------------------------------
# PHI: the bundled files carry (fake) patient names, ids, dates, institutions and physicians
# --------------------------------------------------------------------------------------------------

PHI_FILES = ["CT_small.dcm", "MR_small.dcm", "examples_palette.dcm", "examples_rgb_color.dcm",
             "examples_ybr_color.dcm", "liver_1frame.dcm", "rtdose_1frame.dcm", "JPEG2000.dcm"]


def phi_values(names: list[str]) -> set[str]:
    values: set[str] = set()
    for name in names:
        ds = pydicom.dcmread(bundled(name), stop_before_pixels=True)
        for keyword in PHI_KEYWORDS:
            value = ds.get(keyword)
            for item in (value if isinstance(value, (list, pydicom.multival.MultiValue)) else [value]):
                text = str(item).strip() if item is not None else ""
                if len(text) >= 4:
                    values.add(text)
                    values.update(part for part in text.replace("^", " ").split() if len(part) >= 5)
    return values


def test_dicom_info_is_an_allow_list() -> None:
    assert set(DicomInfo.__dataclass_fields__) == {
        "modality", "body_part", "rows", "columns", "frames", "frame", "pixel_spacing", "slice_thickness",
        "photometric_interpretation", "window"}
    assert _scrub("bad value 'CompressedSamples^CT1' in file", pydicom.dcmread(bundled("CT_small.dcm"))) == \
        "bad value '[redacted]' in file"


def test_phi_never_reaches_records_outputs_or_logs(tmp_path: Path, micro_model, caplog, capsys) -> None:
    from medvlm.cli import main
    from medvlm.data.reading import read_samples
    from medvlm.data.sources import read_source
    from medvlm.eval.predict import PredictSettings, generate_answers
    from medvlm.eval.score import read_answers, score
    from medvlm.recipe import SourceSpec

    secrets = phi_values(PHI_FILES)
    assert {"CompressedSamples^CT1", "CompressedSamples^MR1"} <= secrets and len(secrets) > 10
    images = tmp_path / "images"
    images.mkdir()
    records = []
    for index, name in enumerate(PHI_FILES):
        shutil.copy(bundled(name), images / name)
        records.append({"id": f"d{index}", "image": name, "answer_type": "CLOSED", "conversations": [
            {"from": "human", "value": "<image>\nIs this a scan?"}, {"from": "gpt", "value": "yes"}]})
    records.append({"id": "broken", "image": "truncated.dcm", "conversations": [
        {"from": "human", "value": "<image>\nIs this a scan?"}, {"from": "gpt", "value": "yes"}]})
    shutil.copy(bundled("MR_truncated.dcm"), images / "truncated.dcm")  # carries a patient name too
    secrets |= phi_values(["MR_truncated.dcm"])
    data = write_json(tmp_path / "dicom.json", records)
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)

    samples, report = read_source("llava", str(data), "test", image_root=str(images))
    kept, reports = read_samples([SourceSpec(dataset="llava", path=str(data), image_root=str(images),
                                             options={"dicom": "lung"})], policy="skip", image_check="decode")
    (out / "data_report.json").parent.mkdir()
    (out / "data_report.json").write_text(json.dumps(reports))
    assert len(kept) == len(PHI_FILES) and reports[0]["images"]["dicom_files"] == len(PHI_FILES)
    assert main(["data", "inspect", "--dataset", "llava", "--path", str(data), "--image-root", str(images),
                 "--image-check", "decode", "--json"]) == 0
    assert main(["data", "inspect", "--dataset", "llava", "--path", str(data), "--image-root", str(images)]) == 0
    assert main(["data", "convert", "--dataset", "llava", "--path", str(data), "--image-root", str(images),
                 "--output", str(out / "converted.json")]) == 0
    checked = check_images(samples, "decode")
    assert list(checked.bad) == ["broken"] and checked.dicom_modalities["CT"] == 1
    model, processor = micro_model
    answers = out / "answers.jsonl"
    generate_answers(model, processor, samples[: len(PHI_FILES)], PredictSettings(max_new_tokens=3, batch_size=4),
                     output=answers, show_progress=False)
    (out / "scores.json").write_text(json.dumps(score(samples[: len(PHI_FILES)], read_answers(answers))))
    assert main(["data", "inspect", "--dataset", "llava", "--path", str(data), "--image-root", str(images),
                 "--image-check", "decode", "--strict"]) == 2

    captured = capsys.readouterr()
    texts = {"stdout": captured.out, "stderr": captured.err, "logs": caplog.text,
             "records": json.dumps([s.to_dict() for s in samples + kept])}
    texts.update({path.name: path.read_text() for path in out.iterdir()})
    assert "record broken" in captured.err and "cannot decode" in captured.out  # the problem itself is reported
    for label, text in texts.items():
        leaked = sorted(secret for secret in secrets if secret in text)
        assert not leaked, f"PHI in {label}: {leaked}"
