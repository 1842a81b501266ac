"""SLAKE 1.0 (Liu et al., 2021; CC BY 4.0): ``train.json`` / ``validate.json`` / ``test.json``.

``path`` is the ``Slake1.0`` folder (split files plus ``imgs/``) or one split file. Each record is
one QA about ``imgs/<img_name>`` (``xmlabN/source.jpg``); both languages share the files, and the
reader keeps English only by default (``language: en``; ``zh`` or ``all`` for the others), which is
the split the literature reports (1,061 English test QA: 645 open, 416 closed).

Meta: ``source_id`` = ``qid``; ``organ`` = ``location``; ``question_type`` = ``content_type``;
``language`` = ``q_lang``; ``modality`` as published (CT, MRI, X-Ray). ``meta.extra`` keeps
``base_type`` (vqa | kvqa), ``triple`` (knowledge-graph triple), ``img_id``, and the paths of the
image folder's segmentation ``mask`` (``mask.png``) and ``detection`` boxes (``detection.json``),
relative to the image root — read them with :func:`read_detection` and :func:`read_mask`;
:func:`mask_labels` reads ``mask.txt`` (pixel value → organ name). Key order varies between records,
which JSON does not care about.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from medvlm.data import fields
from medvlm.data.fields import Invalid
from medvlm.data.images import resolve_image_path
from medvlm.data.jsonfiles import load_json
from medvlm.data.records import Sample, SampleMeta, vqa_sample
from medvlm.data.sources import ReadReport, register_source
from medvlm.errors import DataError

SPLITS = ("train", "validate", "test")
LANGUAGES = ("en", "zh", "all")


def locate(path: str, split: str) -> Path:
    given = Path(path)
    if given.is_dir():
        candidate = given / f"{split}.json"
        if not candidate.is_file():
            raise DataError(f"no {split}.json in this folder", file=path)
        return candidate
    if not given.is_file():
        raise DataError("file not found", file=path)
    if given.stem in SPLITS and given.stem != split:
        raise DataError(f"this file holds the '{given.stem}' split, not '{split}'", file=path, key="split")
    return given


def _meta(record: dict[str, Any], split: str, qid: str, language: str) -> SampleMeta:
    image = fields.text(record, "img_name")
    folder = str(Path(image).parent) if "/" in image else ""  # type: ignore[arg-type]
    triple = record.get("triple")
    if triple is not None and not (isinstance(triple, list) and all(isinstance(t, str) for t in triple)):
        raise Invalid("expected a list of strings", "triple")
    extra: dict[str, Any] = {"base_type": fields.text(record, "base_type", required=False), "triple": triple,
                             "img_id": fields.record_id(record, "img_id") if "img_id" in record else None}
    if folder:
        extra["mask"] = f"{folder}/mask.png"
        extra["detection"] = f"{folder}/detection.json"
    return SampleMeta(dataset="slake", split=split, answer_type=fields.answer_type(record),  # type: ignore[arg-type]
                      modality=fields.text(record, "modality", required=False),
                      organ=fields.text(record, "location", required=False),
                      question_type=fields.text(record, "content_type", required=False),
                      language=language, source_id=qid, extra=extra)


@register_source("slake")
def read(path: str | None, split: str, report: ReadReport, image_root: str | None = None,
         language: str = "en", **options: Any) -> Iterator[Sample]:
    if path is None:
        raise DataError("the slake source needs a path: the Slake1.0 folder or a split JSON file")
    fields.check_options("slake", options, ("language",), file=path)
    if language not in LANGUAGES:
        raise DataError(f"option language must be one of {', '.join(LANGUAGES)}, got {language!r}",
                        file=path, key="language")
    split = fields.canonical_split(split, SPLITS, file=path)
    data_file = locate(path, split)
    file = str(data_file)
    root = image_root if image_root is not None else \
        str(fields.first_existing([data_file.parent / "imgs"]) or data_file.parent)
    ids = fields.UniqueIds("qid")
    for location, record in fields.object_records(data_file, report, file=file):
        where = location
        try:
            qid = fields.record_id(record, "qid")
            where = qid
            q_lang = fields.text(record, "q_lang")
            if q_lang not in ("en", "zh"):
                raise Invalid(f"unknown q_lang {q_lang!r} (expected en or zh)", "q_lang")
            if language != "all" and q_lang != language:
                continue
            ids.add(qid)
            image = fields.text(record, "img_name")
            question = fields.text(record, "question")
            answer = fields.text(record, "answer", numbers=True)
            meta = _meta(record, split, qid, q_lang)  # type: ignore[arg-type]
        except Invalid as bad:
            report.problem(bad.message, file=file, record=where, key=bad.key)
            continue
        yield vqa_sample(id=f"slake-{qid}", question=question, answer=answer, meta=meta,  # type: ignore[arg-type]
                         image=image, image_root=root)


def read_detection(sample: Sample) -> list[tuple[str, tuple[float, float, float, float]]]:
    """The image's detection boxes as (label, (x, y, w, h)); ``[]`` when the file lists none."""
    relative = sample.meta.extra.get("detection")
    if not relative:
        return []
    path = resolve_image_path(relative, sample.image_root, record=sample.id)
    data = load_json(path)
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    if not isinstance(data, list):
        raise DataError("expected a list of {label: [x, y, w, h]}", file=str(path), record=sample.id)
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise DataError("expected {label: [x, y, w, h]}", file=str(path), record=sample.id, key=f"[{index}]")
        for label, box in item.items():
            if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
                raise DataError("expected a box [x, y, w, h]", file=str(path), record=sample.id,
                                key=f"[{index}].{label}")
            boxes.append((label, tuple(float(v) for v in box)))  # type: ignore[arg-type]
    return boxes


def read_mask(sample: Sample) -> Image.Image:
    """The segmentation mask as a single-channel image of organ codes (see :func:`mask_labels`)."""
    relative = sample.meta.extra.get("mask")
    if not relative:
        raise DataError("this sample has no mask", record=sample.id, key="mask")
    path = resolve_image_path(relative, sample.image_root, record=sample.id)
    if not path.is_file():
        raise DataError(f"mask file not found: {path}", record=sample.id, key="mask")
    with Image.open(path) as handle:
        return handle.convert("RGB").getchannel(0) if handle.mode in ("RGB", "RGBA") else handle.convert("L")


def mask_labels(path: str | Path) -> dict[int, str]:
    """``mask.txt`` (``value:Organ Name`` per line) as a mapping."""
    labels: dict[int, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        value, sep, name = line.partition(":")
        if not sep or not value.strip().isdigit():
            raise DataError("expected 'value:Organ Name'", file=str(path), record=f"line {number}")
        labels[int(value)] = name.strip()
    return labels
