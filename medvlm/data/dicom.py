"""DICOM files to 8-bit RGB images, with no patient data leaving the file.

Grey-scale pipeline (DICOM PS3.4 Annex N order): decode one frame (the middle one of a multi-frame
file by default) → modality LUT (Rescale Slope/Intercept, a Modality LUT Sequence, or the Enhanced
multi-frame functional groups) → VOI (the file's VOI LUT Sequence or its Window Center/Width with
its VOI LUT Function; a named CT preset or an explicit window; min–max when the file states none)
→ MONOCHROME1 inversion → 8 bit. The three-window mode puts three presets into the R, G and B
channels (lung / mediastinum / bone by default), a common trick for CT with RGB vision towers.
Colour files: RGB as is, YBR converted by pydicom, PALETTE COLOR through its lookup table.

Compressed transfer syntaxes decode through pydicom's plugins: Pillow (JPEG baseline/extended,
JPEG 2000), pydicom's own RLE, and pylibjpeg (JPEG lossless, JPEG-LS) from the optional
``medvlm[dicom]`` extra; a missing plugin is an error naming the package to install.

PHI: the only metadata medvlm keeps is :class:`DicomInfo`, an allow-list (modality, body part,
size, frames, spacing, slice thickness, photometric interpretation, the window applied). Patient
names and ids, dates, institutions and physicians are never copied into records, logs, converted
files, predictions or reports; pydicom's own warnings (which quote element values) are silenced
while reading, and error messages are scrubbed of the file's identifying values.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medvlm.errors import DataError

#: CT windows in Hounsfield units, (centre, width) — the usual radiology reading presets.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "abdomen": (50.0, 400.0),
    "liver": (30.0, 150.0),
}
DEFAULT_CHANNELS = ("lung", "mediastinum", "bone")
FRAME_CHOICES = ("middle", "first", "last")

#: Identifying elements whose values are scrubbed from error messages (never stored anywhere).
PHI_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate", "PatientBirthName",
    "PatientMotherBirthName", "PatientAddress", "PatientTelephoneNumbers", "IssuerOfPatientID",
    "MedicalRecordLocator", "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "ReferringPhysicianName", "PerformingPhysicianName", "NameOfPhysiciansReadingStudy", "OperatorsName",
    "PhysiciansOfRecord", "RequestingPhysician", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
    "InstanceCreationDate", "StudyTime", "SeriesTime", "AcquisitionDateTime", "AccessionNumber", "StudyID",
    "StationName", "DeviceSerialNumber",
)


@dataclass(frozen=True)
class DicomSettings:
    """How to turn stored values into display values.

    ``window``: ``auto`` (the file's VOI LUT or window, else min–max), ``minmax``, a preset name from
    :data:`CT_PRESETS`, or ``[centre, width]`` in modality units (HU for CT). ``channels``: three
    preset names (or ``[centre, width]`` pairs) for the three-window RGB mode. ``frame``: ``middle``
    (default), ``first``, ``last`` or a 0-based index. ``voi_index``: which of several windows the
    file lists.
    """

    window: str | tuple[float, float] = "auto"
    channels: tuple[str | tuple[float, float], ...] | None = None
    frame: str | int = "middle"
    voi_index: int = 0

    @classmethod
    def parse(cls, value: DicomSettings | Mapping[str, Any] | str | None) -> DicomSettings:
        """From a recipe/CLI value: a mapping of the fields, or a string naming the window."""
        if value is None:
            return cls()
        if isinstance(value, DicomSettings):
            return value
        if isinstance(value, str):
            value = {"window": value}
        if not isinstance(value, Mapping):
            raise DataError(f"expected a mapping like {{window: lung}}, got {value!r}", key="dicom")
        unknown = sorted(set(value) - {"window", "channels", "frame", "voi_index"})
        if unknown:
            raise DataError(f"unknown DICOM setting(s) {', '.join(unknown)}; known: window, channels, frame, "
                            "voi_index", key="dicom")
        window = _window_spec(value.get("window", "auto"), allow_modes=True)
        channels = value.get("channels")
        if channels is not None:
            if channels == "default" or channels is True:
                channels = DEFAULT_CHANNELS
            if not isinstance(channels, (list, tuple)) or len(channels) != 3:
                raise DataError("channels must list three windows, e.g. [lung, mediastinum, bone]",
                                key="dicom.channels")
            channels = tuple(_window_spec(item, allow_modes=False) for item in channels)
        frame = value.get("frame", "middle")
        if not (frame in FRAME_CHOICES or (isinstance(frame, int) and not isinstance(frame, bool))):
            raise DataError(f"frame must be middle, first, last or an index, got {frame!r}", key="dicom.frame")
        voi_index = value.get("voi_index", 0)
        if not isinstance(voi_index, int) or voi_index < 0:
            raise DataError("voi_index must be a non-negative integer", key="dicom.voi_index")
        return cls(window=window, channels=channels, frame=frame, voi_index=voi_index)

    def key(self) -> str:
        """A stable text form (cache keys, provenance)."""
        return f"window={self.window};channels={self.channels};frame={self.frame};voi={self.voi_index}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _window_spec(value: Any, *, allow_modes: bool) -> str | tuple[float, float]:
    if isinstance(value, str):
        name = value.strip().lower()
        if name in CT_PRESETS or (allow_modes and name in ("auto", "minmax")):
            return name
        known = list(CT_PRESETS) + (["auto", "minmax"] if allow_modes else [])
        raise DataError(f"unknown window '{value}'; known: {', '.join(known)} or [centre, width]", key="dicom.window")
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) and value[1] > 0:
        return (float(value[0]), float(value[1]))
    raise DataError(f"a window is a preset name or [centre, width] with width > 0, got {value!r}", key="dicom.window")


@dataclass(frozen=True)
class DicomInfo:
    """The allow-listed metadata of a DICOM image — nothing that identifies a patient."""

    modality: str | None
    body_part: str | None
    rows: int | None
    columns: int | None
    frames: int
    frame: int | None
    pixel_spacing: tuple[float, float] | None
    slice_thickness: float | None
    photometric_interpretation: str | None
    window: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------


@contextmanager
def _quiet() -> Iterator[None]:
    """pydicom warns and logs with element values quoted (dates, names): keep those out of logs."""
    logger = logging.getLogger("pydicom")
    previous = logger.disabled
    logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.disabled = previous


def _phi_values(ds: Any) -> list[str]:
    values = []
    for keyword in PHI_KEYWORDS:
        value = ds.get(keyword) if ds is not None else None
        items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
        for item in items:
            text = str(item).strip() if item is not None else ""
            if len(text) >= 2:
                values.append(text)
                values.extend(part for part in text.replace("^", " ").split() if len(part) >= 3)
    return sorted(set(values), key=len, reverse=True)


def _scrub(message: str, ds: Any) -> str:
    for value in _phi_values(ds):
        message = message.replace(value, "[redacted]")
    return message.splitlines()[0] if message else message


def _read(path: Path, *, pixels: bool, data: bytes | None = None) -> Any:
    """The dataset of ``path`` (or of ``data``, embedded bytes that ``path`` only names in messages)."""
    import io

    import pydicom
    from pydicom.errors import InvalidDicomError

    if data is None and not path.is_file():
        raise DataError(f"DICOM file not found: {path}")
    try:
        with _quiet():
            if data is None:
                return pydicom.dcmread(path, stop_before_pixels=not pixels)
            # Embedded bytes may be a bare data set (no preamble, no file meta): read them all the same,
            # so that their pixels, not their bytes, are what a cache keeps.
            return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=not pixels, force=True)
    except InvalidDicomError:
        raise DataError(f"not a DICOM file (no DICM preamble): {path}") from None
    except Exception as exc:  # noqa: BLE001 — pydicom's parser raises whatever malformed bytes provoke
        raise DataError(f"cannot read DICOM file {path}: {type(exc).__name__}") from None


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for files with the DICOM ``DICM`` marker after the 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _number(value: Any) -> float | None:
    try:
        return float(value) if value is not None and str(value).strip() != "" else None
    except (TypeError, ValueError):
        return None


def _frame_index(frames: int, choice: str | int, path: Path) -> int:
    if choice == "middle":
        return frames // 2
    if choice == "first":
        return 0
    if choice == "last":
        return frames - 1
    index = int(choice)
    if not -frames <= index < frames:
        raise DataError(f"frame {index} asked for, but {path} has {frames} frame(s)")
    return index % frames


def _functional_group(ds: Any, frame: int, sequence: str) -> Any:
    """An Enhanced multi-frame functional-group item (per-frame first, then shared), or None."""
    for holder, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(holder)
        if groups and index < len(groups) and groups[index].get(sequence):
            return groups[index].get(sequence)[0]
    return None


def apply_lut(values: np.ndarray, item: Any, ds: Any) -> tuple[np.ndarray, int]:
    """Look ``values`` up in a Modality or VOI LUT Sequence item; returns (mapped values, bits per entry).

    Written out rather than using pydicom's ``apply_voi``, which builds its index array in the LUT's
    own dtype and so wraps around for 8-bit LUTs applied to wider stored values.
    """
    entries, first, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    if int(ds.get("PixelRepresentation", 0) or 0) == 1 and first >= 32768:
        first -= 65536  # the first mapped value is signed for signed pixel data, but often read as US
    data = item.LUTData
    if isinstance(data, (bytes, bytearray)):
        little = ds.original_encoding[1] if ds.original_encoding[1] is not None else True
        table = np.frombuffer(bytes(data), dtype="<u2" if little else ">u2")[:entries]
    else:
        table = np.asarray(list(data) if hasattr(data, "__len__") else [data])  # one entry reads as a scalar
    index = np.clip(np.rint(values).astype(np.int64) - first, 0, len(table) - 1)
    return table.astype(np.float64)[index], bits


def _modality_values(arr: np.ndarray, ds: Any, frame: int) -> np.ndarray:
    """Stored values → modality values (HU for CT): Modality LUT, or rescale slope and intercept."""
    values = arr.astype(np.float64)
    if ds.get("ModalityLUTSequence"):
        return apply_lut(values, ds.ModalityLUTSequence[0], ds)[0]
    holder = ds if "RescaleSlope" in ds else _functional_group(ds, frame, "PixelValueTransformationSequence")
    if holder is not None and "RescaleSlope" in holder:
        return values * float(holder.RescaleSlope) + float(holder.get("RescaleIntercept", 0) or 0)
    return values


def linear_window(values: np.ndarray, centre: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 windowing to [0, 1] (LINEAR, LINEAR_EXACT or SIGMOID)."""
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((values - centre) / width + 0.5, 0.0, 1.0)
    if width <= 1:  # LINEAR with width 1 is a threshold
        return (values > centre - 0.5).astype(np.float64)
    return np.clip((values - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _minmax(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return np.zeros_like(values) if high <= low else (values - low) / (high - low)


def _file_window(ds: Any, frame: int, index: int) -> tuple[float, float, str] | None:
    holder = ds if "WindowCenter" in ds and "WindowWidth" in ds else _functional_group(ds, frame, "FrameVOILUTSequence")
    if holder is None or "WindowCenter" not in holder or "WindowWidth" not in holder:
        return None
    centres, widths = holder.WindowCenter, holder.WindowWidth
    centres = list(centres) if type(centres).__name__ == "MultiValue" else [centres]
    widths = list(widths) if type(widths).__name__ == "MultiValue" else [widths]
    centre, width = _number(centres[min(index, len(centres) - 1)]), _number(widths[min(index, len(widths) - 1)])
    if centre is None or width is None or width <= 0:
        return None
    return centre, width, str(holder.get("VOILUTFunction", "LINEAR") or "LINEAR")


def _grey_display(arr: np.ndarray, ds: Any, frame: int, settings: DicomSettings) -> tuple[np.ndarray, str]:
    """Stored values → display values in [0, 1] (one channel, or three in the multi-window mode)."""
    values = _modality_values(arr, ds, frame)
    if settings.channels:
        planes = [linear_window(values, *(CT_PRESETS[w] if isinstance(w, str) else w)) for w in settings.channels]
        return np.stack(planes, axis=-1), "channels " + "/".join(
            w if isinstance(w, str) else f"{w[0]:g},{w[1]:g}" for w in settings.channels)
    window = settings.window
    if isinstance(window, tuple):
        return linear_window(values, *window), f"{window[0]:g},{window[1]:g}"
    if window in CT_PRESETS:
        return linear_window(values, *CT_PRESETS[window]), str(window)
    if window == "auto":
        voi_lut = ds.get("VOILUTSequence")
        if voi_lut:
            mapped, bits = apply_lut(values, voi_lut[min(settings.voi_index, len(voi_lut) - 1)], ds)
            return mapped / float((1 << bits) - 1), "file VOI LUT"
        found = _file_window(ds, frame, settings.voi_index)
        if found is not None:
            centre, width, function = found
            return linear_window(values, centre, width, function), f"file {centre:g},{width:g}"
    return _minmax(values), "minmax"


def _colour_display(arr: np.ndarray, ds: Any) -> np.ndarray:
    """RGB / YBR (already converted by pydicom) / PALETTE COLOR → [0, 1] RGB."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        rgb = np.asarray(apply_color_lut(arr, ds))[..., :3]
        return rgb.astype(np.float64) / (255.0 if rgb.dtype == np.uint8 else 65535.0)
    bits = int(ds.get("BitsStored", 8) or 8)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return arr[..., :3].astype(np.float64) / float((1 << bits) - 1)


def _syntax_as_read(ds: Any) -> Any:
    """The uncompressed transfer syntax a bare data set (no file meta) was parsed with, else None."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        return None
    if implicit:
        return ImplicitVRLittleEndian if little else None
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _decode(ds: Any, path: Path, frame: int) -> np.ndarray:
    from pydicom.pixels import get_decoder, pixel_array

    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None and (syntax := _syntax_as_read(ds)) is not None:
        from pydicom.dataset import FileMetaDataset

        ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax  # pydicom's decoders read the syntax from the file meta
    if syntax is None:
        raise DataError(f"DICOM file {path} has no transfer syntax in its file meta")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DataError(f"DICOM transfer syntax {syntax.name} is not supported: {path}") from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise DataError(f"cannot decode {syntax.name} pixel data in {path}: no decoder installed ({missing}); "
                        "install the DICOM extra: pip install 'medvlm[dicom]' (pylibjpeg, pylibjpeg-libjpeg)")
    try:
        with _quiet():
            return np.asarray(pixel_array(ds, index=frame))
    except Exception as exc:  # pydicom's plugins raise RuntimeError/ValueError/… of their own
        raise DataError(f"cannot decode {syntax.name} pixel data in {path}: "
                        f"{type(exc).__name__}: {_scrub(str(exc), ds)}") from None


def read_dicom(path: str | os.PathLike, settings: DicomSettings | Mapping[str, Any] | str | None = None,
               *, data: bytes | None = None) -> tuple[Image.Image, DicomInfo]:
    """Decode one frame of a DICOM file (or of embedded bytes ``data``, which ``path`` then only names in
    messages) to an 8-bit RGB image, with its allow-listed metadata."""
    path = Path(path)
    settings = DicomSettings.parse(settings)
    ds = _read(path, pixels=True, data=data)
    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(f"DICOM file has no pixel data (modality {ds.get('Modality', 'unknown')}): {path}")
    from pydicom.pixels.utils import get_nr_frames

    with _quiet():
        try:
            frames = int(get_nr_frames(ds, warn=False))
        except (TypeError, ValueError):
            raise DataError(f"DICOM file has an invalid Number of Frames: {path}") from None
    frame = _frame_index(frames, settings.frame, path)
    arr = _decode(ds, path, frame)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    try:
        if photometric.startswith("MONOCHROME") and samples == 1:
            display, applied = _grey_display(arr, ds, frame, settings)
            inverse = photometric == "MONOCHROME1" or str(ds.get("PresentationLUTShape", "")).upper() == "INVERSE"
            if inverse:
                display = 1.0 - display
        else:
            display, applied = _colour_display(arr, ds), "colour"
    except (AttributeError, IndexError, KeyError, ValueError, TypeError, NotImplementedError) as exc:
        reason = f"{type(exc).__name__}: {_scrub(str(exc), ds)}"
        raise DataError(f"cannot apply the DICOM LUTs of {path}: {reason}") from None
    pixels = np.rint(np.clip(display, 0.0, 1.0) * 255.0).astype(np.uint8)
    image = Image.fromarray(pixels, "L").convert("RGB") if pixels.ndim == 2 else Image.fromarray(pixels, "RGB")
    return image, _info(ds, frames=frames, frame=frame, window=applied)


def _info(ds: Any, *, frames: int, frame: int | None, window: str | None) -> DicomInfo:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    pair = tuple(float(v) for v in spacing)[:2] if spacing is not None and len(spacing) >= 2 else None
    return DicomInfo(
        modality=str(ds.get("Modality")) if ds.get("Modality") else None,
        body_part=str(ds.get("BodyPartExamined")) if ds.get("BodyPartExamined") else None,
        rows=int(ds.Rows) if "Rows" in ds else None, columns=int(ds.Columns) if "Columns" in ds else None,
        frames=frames, frame=frame, pixel_spacing=pair,  # type: ignore[arg-type]
        slice_thickness=_number(ds.get("SliceThickness")),
        photometric_interpretation=(str(ds.get("PhotometricInterpretation"))
                                    if ds.get("PhotometricInterpretation") else None),
        window=window)


def dicom_info(path: str | os.PathLike) -> DicomInfo:
    """Allow-listed metadata from the header only (no pixel decoding).

    Raises :class:`DataError` for files that describe no image (reports, plans, waveforms).
    """
    ds = _read(Path(path), pixels=False)
    if "Rows" not in ds or "Columns" not in ds or "BitsAllocated" not in ds:
        raise DataError(f"DICOM file has no image (modality {ds.get('Modality', 'unknown')}): {path}")
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return _info(ds, frames=frames, frame=None, window=None)


def load_dicom_image(path: str | os.PathLike,
                     settings: DicomSettings | Mapping[str, Any] | str | None = None) -> Image.Image:
    """The RGB image :func:`medvlm.data.images.load_image` returns for ``.dcm`` paths."""
    return read_dicom(path, settings)[0]


def dicom_bytes_to_png(data: bytes, name: str) -> bytes:
    """Embedded DICOM bytes as a PNG of their pixels only (default rendering: the file's window).

    Caches must never hold the DICOM itself: its header carries the patient's name and id, dates and
    the institution. ``name`` labels the bytes in error messages.
    """
    import io

    image, _ = read_dicom(name, data=data)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
