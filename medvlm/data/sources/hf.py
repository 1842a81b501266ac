"""Hugging Face data: a ``save_to_disk`` directory, Arrow files, or parquet files (hub layout).

``path`` may be

* a ``datasets`` directory written by ``save_to_disk`` (a ``DatasetDict`` — the split picks one — or
  a single ``Dataset``);
* an ``.arrow`` file, a ``.parquet`` file, or a folder of them: files are matched to the split by the
  hub naming (``data/test-00000-of-00001.parquet``, ``test.parquet``, ``test/…``); a folder whose
  files carry no split name is read whole.

Each row becomes one sample. Column names are configurable through ``columns`` (defaults in
:data:`DEFAULT_COLUMNS`; ``null`` switches one off): either ``question`` + ``answer`` (one-turn VQA)
or ``conversations`` (LLaVA ``[{from, value}]`` turns). Images may be a ``datasets.Image`` column
(``{bytes, path}``), raw bytes, a path relative to ``image_root``, a list of those, or null
(text-only). Embedded image bytes are written once, content-addressed, into ``image_cache``
(default ``$MEDVLM_CACHE/images`` or ``~/.cache/medvlm/images``) so the rest of medvlm can treat
them as files; embedded DICOM is cached as the PNG of its pixels, never as DICOM (PHI). Without an
``answer_type`` column, yes/no answers are CLOSED and the rest OPEN
(``closed_rule: yesno``; ``none`` leaves it unset). ``dataset_name`` sets ``meta.dataset``.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvlm.data import fields
from medvlm.data.fields import Invalid
from medvlm.data.records import IMAGE_PLACEHOLDER, Sample, SampleMeta, Turn, vqa_sample
from medvlm.data.sources import ReadReport, register_source
from medvlm.data.sources.llava import parse_conversation
from medvlm.errors import DataError
from medvlm.io import atomic_open

DEFAULT_COLUMNS: dict[str, str | None] = {
    "id": None,  # None: the first of id / qid / question_id present, else the row number
    "question": "question", "answer": "answer", "image": "image", "conversations": "conversations",
    "answer_type": "answer_type", "question_type": "question_type", "modality": "modality",
    "organ": "organ", "language": "language",
}
ID_CANDIDATES = ("id", "qid", "question_id")
FALLBACKS = {"organ": ("location", "image_organ"), "language": ("q_lang",), "question_type": ("content_type",)}
_SHARD = re.compile(r"^(?P<split>[A-Za-z_]+?)(?:[-_.]\d{5}-of-\d{5}|[-_]\d+)?$")


def default_image_cache() -> Path:
    base = os.environ.get("MEDVLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "medvlm")
    return Path(base) / "images"


# Raster formats whose bytes are cached as they are (PIL's format name → suffix). Anything else is
# decoded as DICOM (pixels only) or refused: raw bytes of another kind could carry a DICOM header
# without its preamble, or any other container with patient data, to disk.
_RASTER_SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp"}


def _raster_suffix(data: bytes) -> str | None:
    """The suffix of a raster image PIL recognises from its header, else None (nothing is decoded)."""
    import io
    import warnings

    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a plugin's complaints about bytes it then rejects
        try:
            with Image.open(io.BytesIO(data)) as image:
                return _RASTER_SUFFIXES.get(image.format or "")
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            return None


def store_image_bytes(data: bytes, cache: Path, name: str | None = None) -> str:
    """Write embedded image bytes once under a content hash; returns the file name inside ``cache``.

    Raster images (PNG, JPEG, GIF, BMP, TIFF, WebP) are cached as they are. Everything else is read as
    DICOM (:mod:`medvlm.data.dicom`, the file's own window; with or without the 128-byte preamble) and
    only its pixels are cached, as PNG: the DICOM header (patient name and id, dates, institution) never
    reaches disk. Bytes that are neither are refused and nothing is written. The hash is of the original
    bytes, so the same DICOM is decoded once.
    """
    digest = hashlib.sha256(data).hexdigest()[:40]
    # a DICOM file's 128-byte preamble may itself hold a TIFF header ("dual-personality" files): the
    # marker decides first
    suffix = None if data[128:132] == b"DICM" else _raster_suffix(data)
    if suffix is None:
        target = cache / f"{digest}.png"
        if not target.is_file():
            from medvlm.data.dicom import dicom_bytes_to_png

            try:
                png = dicom_bytes_to_png(data, name or f"embedded image {digest[:12]}")
            except DataError as exc:
                raise Invalid(f"neither a raster image (PNG, JPEG, GIF, BMP, TIFF, WebP) nor DICOM: {exc.detail}",
                              "image") from None
            with atomic_open(target, "wb") as handle:
                handle.write(png)
        return target.name
    target = cache / (digest + suffix)
    if not target.is_file():
        with atomic_open(target, "wb") as handle:
            handle.write(data)
    return target.name


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------


def _split_of(file: Path, root: Path) -> str | None:
    match = _SHARD.match(file.stem)
    if match and match.group("split").lower() not in ("data", "part"):
        return match.group("split")
    parent = file.parent
    return parent.name if parent != root else None


def _table_files(folder: Path, split: str) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".parquet", ".arrow") and p.is_file())
    if not files:
        raise DataError("no .parquet or .arrow files in this folder", file=str(folder))
    by_split: dict[str, list[Path]] = {}
    for file in files:
        by_split.setdefault(_split_of(file, folder) or "", []).append(file)
    named = {name: group for name, group in by_split.items() if name}
    if not named:
        return files
    return named[fields.canonical_split(split, named, file=str(folder))]


def _dataset_rows(dataset: Any) -> Iterator[dict[str, Any]]:
    """Rows of a ``datasets.Dataset`` with image columns left undecoded (``{bytes, path}``)."""
    from datasets import Image as ImageFeature

    for name, feature in dataset.features.items():
        if isinstance(feature, ImageFeature) and feature.decode:
            dataset = dataset.cast_column(name, ImageFeature(decode=False))
    for batch in dataset.iter(batch_size=256):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            yield dict(zip(columns, values, strict=True))


def _file_rows(file: Path) -> Iterator[dict[str, Any]]:
    if file.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            handle = pq.ParquetFile(file)
        except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError family
            raise DataError(f"not a readable parquet file: {exc}", file=str(file)) from None
        for batch in handle.iter_batches(batch_size=256):
            yield from batch.to_pylist()
        return
    from datasets import Dataset

    try:
        dataset = Dataset.from_file(str(file))
    except Exception as exc:
        raise DataError(f"not a readable Arrow file: {exc}", file=str(file)) from None
    yield from _dataset_rows(dataset)


def iter_rows(path: str, split: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(file, location, row) for every row of the split, whatever the on-disk form."""
    given = Path(path)
    if not given.exists():
        raise DataError("file or folder not found", file=path)
    if given.is_dir() and ((given / "dataset_dict.json").is_file() or (given / "state.json").is_file()):
        from datasets import DatasetDict, load_from_disk

        loaded = load_from_disk(str(given))
        if isinstance(loaded, DatasetDict):
            loaded = loaded[fields.canonical_split(split, list(loaded), file=path)]
        for index, row in enumerate(_dataset_rows(loaded)):
            yield path, f"row {index}", row
        return
    files = _table_files(given, split) if given.is_dir() else [given]
    index = 0
    for file in files:
        if file.suffix not in (".parquet", ".arrow"):
            raise DataError("expected a .parquet or .arrow file or a datasets directory", file=str(file))
        for row in _file_rows(file):
            yield str(file), f"row {index}", row
            index += 1


# --------------------------------------------------------------------------------------------------
# Rows → samples
# --------------------------------------------------------------------------------------------------


def _images(value: Any, cache: Path) -> list[tuple[str, bool]]:
    """(name, embedded) pairs: embedded names live in ``cache``, the others under the image root."""
    if value is None:
        return []
    if isinstance(value, list):
        return [image for item in value for image in _images(item, cache)]
    if isinstance(value, (bytes, bytearray)):
        return [(store_image_bytes(bytes(value), cache), True)]
    if isinstance(value, str):
        return [(value, False)]
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        if value.get("bytes"):
            return [(store_image_bytes(bytes(value["bytes"]), cache, value.get("path")), True)]
        if isinstance(value.get("path"), str) and value["path"]:
            return [(value["path"], False)]
        raise Invalid("image has neither bytes nor a path", "image")
    raise Invalid(f"expected image bytes, a path or {{bytes, path}}, got {type(value).__name__}", "image")


class ColumnMap:
    """Which column holds what, resolved against the first row's keys."""

    def __init__(self, overrides: dict[str, Any] | None, *, file: str) -> None:
        unknown = sorted(set(overrides or {}) - set(DEFAULT_COLUMNS))
        if unknown:
            raise DataError(f"unknown key(s) in option columns: {', '.join(unknown)}; known: "
                            f"{', '.join(DEFAULT_COLUMNS)}", file=file, key="columns")
        self.explicit = dict(overrides or {})
        self.names = {**DEFAULT_COLUMNS, **self.explicit}

    def resolve(self, row: dict[str, Any], *, file: str) -> dict[str, str | None]:
        resolved: dict[str, str | None] = {}
        for role, name in self.names.items():
            if role in self.explicit and name is not None and name not in row:
                raise DataError(f"column '{name}' (columns.{role}) not in the data; columns: "
                                f"{', '.join(row)}", file=file, key=f"columns.{role}")
            candidates = [name] if name else []
            if role == "id" and name is None and "id" not in self.explicit:
                candidates = list(ID_CANDIDATES)
            if role not in self.explicit:
                candidates += list(FALLBACKS.get(role, ()))
            resolved[role] = next((c for c in candidates if c in row), None)
        if not resolved["conversations"] and not (resolved["question"] and resolved["answer"]):
            raise DataError("no question/answer or conversations columns; set option columns, e.g. "
                            f"{{question: q, answer: a}} (columns here: {', '.join(row)})", file=file, key="columns")
        return resolved


def row_sample(row: dict[str, Any], columns: dict[str, str | None], *, name: str, split: str, index: int,
               image_root: str | None, cache: Path, closed_rule: str, report: ReadReport, file: str,
               record: str) -> Sample | None:
    """One row as a :class:`Sample` (raises :class:`Invalid` for a bad field)."""
    def column(role: str, *, numbers: bool = False, required: bool = False) -> str | None:
        key = columns[role]
        return fields.text(row, key, numbers=numbers, required=required) if key else None

    source_id = fields.record_id(row, columns["id"]) if columns["id"] else f"{split}-{index}"
    images = _images(row.get(columns["image"]) if columns["image"] else None, cache)
    if len({embedded for _, embedded in images}) > 1:
        raise Invalid("a row mixes embedded images and image paths", columns["image"])
    embedded = bool(images) and images[0][1]
    root = str(cache) if embedded else image_root
    meta = SampleMeta(dataset=name, split=split, modality=column("modality"), organ=column("organ"),
                      question_type=column("question_type"), language=column("language") or "en",
                      source_id=source_id)
    raw_type = column("answer_type")
    if raw_type is not None:
        meta.answer_type = fields.answer_type({"answer_type": raw_type})  # type: ignore[assignment]
    if columns["conversations"]:
        turns = parse_conversation(row.get(columns["conversations"]), report, file=file, record=source_id,
                                   key=columns["conversations"])
        if turns is None:
            return None
        return Sample(id=f"{name}-{source_id}", turns=turns, meta=meta, images=[n for n, _ in images],
                      image_root=root)
    question = column("question", required=True)
    answer = column("answer", numbers=True, required=True)
    if meta.answer_type is None and closed_rule == "yesno":
        meta.answer_type = fields.closed_by_answer(answer)  # type: ignore[arg-type, assignment]
    if len(images) <= 1:
        return vqa_sample(id=f"{name}-{source_id}", question=question, answer=answer, meta=meta,  # type: ignore[arg-type]
                          image=images[0][0] if images else None, image_root=root)
    placeholders = "".join(f"{IMAGE_PLACEHOLDER}\n" for _ in images)
    return Sample(id=f"{name}-{source_id}", turns=[Turn("user", placeholders + question),  # type: ignore[operator]
                                                  Turn("assistant", answer)],  # type: ignore[arg-type]
                  meta=meta, images=[n for n, _ in images], image_root=root)


def read_rows(path: str, split: str, report: ReadReport, *, name: str, image_root: str | None,
              columns: dict[str, Any] | None, image_cache: str | None, closed_rule: str) -> Iterator[Sample]:
    """Shared by the ``hf`` source and the parquet form of ``pathvqa``."""
    if closed_rule not in ("yesno", "none"):
        raise DataError(f"option closed_rule must be yesno or none, got {closed_rule!r}", file=path)
    cache = Path(image_cache) if image_cache else default_image_cache()
    column_map = ColumnMap(columns, file=path)
    resolved: dict[str, str | None] | None = None
    ids = fields.UniqueIds("id")
    root = image_root if image_root is not None else str(Path(path) if Path(path).is_dir() else Path(path).parent)
    for index, (file, location, row) in enumerate(iter_rows(path, split)):
        report.read += 1
        if resolved is None:
            resolved = column_map.resolve(row, file=file)
        where = location
        try:
            if resolved["id"]:
                where = fields.record_id(row, resolved["id"])
            sample = row_sample(row, resolved, name=name, split=split, index=index, image_root=root, cache=cache,
                                closed_rule=closed_rule, report=report, file=file, record=where)
            if sample is None:
                continue
            ids.add(sample.meta.source_id)  # type: ignore[arg-type]
        except Invalid as bad:
            report.problem(bad.message, file=file, record=where, key=bad.key)
            continue
        yield sample


@register_source("hf")
def read(path: str | None, split: str, report: ReadReport, image_root: str | None = None,
         columns: dict[str, Any] | None = None, dataset_name: str = "hf", image_cache: str | None = None,
         closed_rule: str = "yesno", **options: Any) -> Iterator[Sample]:
    if path is None:
        raise DataError("the hf source needs a path: a datasets directory, an .arrow/.parquet file or a folder")
    fields.check_options("hf", options, ("columns", "dataset_name", "image_cache", "closed_rule"), file=path)
    if columns is not None and not isinstance(columns, dict):
        raise DataError("option columns must be a mapping, e.g. {question: q, answer: a}", file=path, key="columns")
    yield from read_rows(path, split, report, name=dataset_name, image_root=image_root, columns=columns,
                         image_cache=image_cache, closed_rule=closed_rule)
