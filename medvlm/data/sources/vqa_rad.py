"""VQA-RAD (Lau et al., 2018; CC0) in its two circulating formats.

* **OSF release** — ``VQA_RAD Dataset Public.json``: all 2,248 QA in one file; the split is in
  ``phrase_type``: train = ``freeform`` + ``para`` (1,797), test = ``test_freeform`` + ``test_para``
  (451). Images in ``VQA_RAD Image Folder/``.
* **MEVF split** — ``trainset.json`` / ``testset.json`` (aioz-ai MICCAI19-MedVQA layout, images in
  ``images/``): one file per split, ``phrase_type`` without the ``test_`` prefix and ``qid``
  renumbered.

``path`` is either file or the folder holding it. Quirks handled: the first OSF qid is the string
``"0"``; five answers are ints (rendered with ``str``); two answer types are ``"CLOSED "``;
``question_rephrase`` is missing from two records; question types vary in case (``"Other"``) and
some are compound (``"POS, PRES"``).

Ids. ``meta.source_id`` is the OSF qid, the id LLaVA-Med's answer files use. For MEVF files it is
the OSF qid found by joining on (image_name, question) when the OSF JSON is given (``osf_json``) or
lies beside the MEVF file (``qid: auto``, the default); otherwise, or with ``qid: mevf``, the MEVF
qid. The MEVF qid is always kept in ``meta.extra["mevf_qid"]``.

``meta.question_type`` normalisation: each comma-separated part stripped and upper-cased, parts
re-joined with ``", "`` in the published order (``"Other"`` → ``"OTHER"``, ``"POS,PRES"`` →
``"POS, PRES"``). Typos in the release (``ATRIB``, ``PRSE``) are kept as published; the raw value is
in ``meta.extra["question_type_raw"]`` when normalisation changed it.

Options: ``paraphrases`` (default true; false keeps ``freeform``/``test_freeform`` only),
``format`` (auto | osf | mevf), ``qid`` (auto | osf | mevf), ``osf_json`` (path).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvlm.data import fields
from medvlm.data.fields import Invalid
from medvlm.data.jsonfiles import iter_records
from medvlm.data.records import Sample, SampleMeta, vqa_sample
from medvlm.data.sources import ReadReport, register_source
from medvlm.errors import DataError

OSF_FILE = "VQA_RAD Dataset Public.json"
OSF_IMAGES = "VQA_RAD Image Folder"
MEVF_FILES = {"train": "trainset.json", "test": "testset.json"}
OSF_PHRASES = {"train": ("freeform", "para"), "test": ("test_freeform", "test_para")}
OSF_ONLY_KEYS = ("qid_linked_id", "image_case_url", "evaluation")
OSF_EXTRA_KEYS = ("qid_linked_id", "image_case_url", "evaluation", "question_relation", "question_frame",
                  "question_rephrase")


def normalise_question_type(value: str) -> str:
    return ", ".join(part.strip().upper() for part in value.split(",") if part.strip())


def detect_format(path: Path) -> str:
    """``osf`` when the records carry OSF-only keys, else ``mevf``."""
    for _, record in iter_records(path):
        if isinstance(record, dict):
            return "osf" if any(key in record for key in OSF_ONLY_KEYS) else "mevf"
    return "osf" if path.name == OSF_FILE else "mevf"


def locate(path: str, split: str, fmt: str) -> tuple[Path, str]:
    """(data file, format) for a file or a folder path."""
    given = Path(path)
    if given.is_dir():
        osf, mevf = given / OSF_FILE, given / MEVF_FILES.get(split, "")
        if fmt in ("auto", "osf") and osf.is_file():
            return osf, "osf"
        if fmt in ("auto", "mevf") and split in MEVF_FILES and mevf.is_file():
            return mevf, "mevf"
        raise DataError(f"no VQA-RAD file for split '{split}' here (looked for '{OSF_FILE}' and "
                        f"'{MEVF_FILES.get(split, 'trainset.json / testset.json')}')", file=path)
    if not given.is_file():
        raise DataError("file not found", file=path)
    return given, detect_format(given) if fmt == "auto" else fmt


def default_image_root(data_file: Path, fmt: str) -> Path:
    folder = data_file.parent
    return fields.first_existing([folder / (OSF_IMAGES if fmt == "osf" else "images")]) or folder


def osf_qid_index(osf_file: Path, split: str) -> dict[tuple[str, str], str]:
    """(image_name, question) → OSF qid for one split, for joining MEVF records to OSF ids."""
    index: dict[tuple[str, str], str] = {}
    for location, record in iter_records(osf_file):
        if not isinstance(record, dict) or record.get("phrase_type") not in OSF_PHRASES[split]:
            continue
        try:
            key = (fields.text(record, "image_name"), fields.text(record, "question"))
            index.setdefault(key, fields.record_id(record, "qid"))  # type: ignore[arg-type]
        except Invalid as bad:
            raise DataError(f"cannot index the OSF file: {bad.message}", file=str(osf_file),
                            record=location, key=bad.key) from None
    return index


def _osf_split(record: dict[str, Any], split: str, paraphrases: bool) -> bool:
    """True: in the split; False: another split or an excluded paraphrase; raises for unknown values."""
    phrase = fields.text(record, "phrase_type")
    if phrase not in OSF_PHRASES["train"] + OSF_PHRASES["test"]:
        raise Invalid(f"unknown phrase_type {phrase!r} (expected one of "
                      f"{', '.join(OSF_PHRASES['train'] + OSF_PHRASES['test'])})", "phrase_type")
    if phrase not in OSF_PHRASES[split]:
        return False
    return paraphrases or not phrase.endswith("para")


def _mevf_split(record: dict[str, Any], paraphrases: bool) -> bool:
    phrase = fields.text(record, "phrase_type", required=False)
    return paraphrases or phrase is None or not phrase.endswith("para")


def _meta(record: dict[str, Any], split: str, source_id: str) -> SampleMeta:
    raw_type = fields.text(record, "question_type", required=False)
    question_type = normalise_question_type(raw_type) if raw_type else None
    extra: dict[str, Any] = {"phrase_type": fields.text(record, "phrase_type", required=False)}
    if raw_type and raw_type != question_type:
        extra["question_type_raw"] = record["question_type"]
    for key in OSF_EXTRA_KEYS:
        value = fields.text(record, key, required=False, nulls=("NULL",))
        if value is not None:
            extra[key] = value
    return SampleMeta(dataset="vqa_rad", split=split, answer_type=fields.answer_type(record),  # type: ignore[arg-type]
                      organ=fields.text(record, "image_organ", required=False), question_type=question_type,
                      language="en", source_id=source_id, extra=extra)


@register_source("vqa_rad")
def read(path: str | None, split: str, report: ReadReport, image_root: str | None = None,
         paraphrases: bool = True, format: str = "auto", qid: str = "auto", osf_json: str | None = None,
         **options: Any) -> Iterator[Sample]:
    if path is None:
        raise DataError("the vqa_rad source needs a path: the OSF JSON, a MEVF trainset/testset.json, "
                        "or the folder holding them")
    fields.check_options("vqa_rad", options, (), file=path)
    if format not in ("auto", "osf", "mevf") or qid not in ("auto", "osf", "mevf"):
        raise DataError("options: format must be auto|osf|mevf and qid auto|osf|mevf", file=path)
    split = fields.canonical_split(split, ("train", "test"), file=path)
    data_file, fmt = locate(path, split, format)
    file = str(data_file)
    if fmt == "mevf":
        stated = next((name for name, base in MEVF_FILES.items() if data_file.name == base), None)
        if stated and stated != split:
            raise DataError(f"this MEVF file holds the '{stated}' split, not '{split}'", file=file, key="split")
    root = image_root if image_root is not None else str(default_image_root(data_file, fmt))

    osf_index: dict[tuple[str, str], str] | None = None
    if fmt == "mevf" and qid != "mevf":
        osf_file = Path(osf_json) if osf_json else data_file.parent / OSF_FILE
        if osf_file.is_file():
            osf_index = osf_qid_index(osf_file, split)
        elif qid == "osf" or osf_json:
            raise DataError("the OSF JSON needed to map MEVF qids to OSF qids is not there", file=str(osf_file))

    ids = fields.UniqueIds("qid")
    for location, record in fields.object_records(data_file, report, file=file):
        where = location
        try:
            own_qid = fields.record_id(record, "qid")
            where = own_qid
            in_split = _osf_split(record, split, paraphrases) if fmt == "osf" else _mevf_split(record, paraphrases)
            if not in_split:
                continue
            image = fields.text(record, "image_name")
            question = fields.text(record, "question")
            answer = fields.text(record, "answer", numbers=True)
            source_id = own_qid
            if osf_index is not None:
                mapped = osf_index.get((image, question))  # type: ignore[arg-type]
                if mapped is None:
                    raise Invalid(f"no OSF {split} record has this image_name and question (pass qid=mevf "
                                  "to keep MEVF ids)", "question")
                source_id = mapped
            ids.add(source_id)
            meta = _meta(record, split, source_id)
            if fmt == "mevf":
                meta.extra["mevf_qid"] = own_qid
        except Invalid as bad:
            report.problem(bad.message, file=file, record=where, key=bad.key)
            continue
        sample_id = f"vqa_rad-{source_id}" if fmt == "osf" or osf_index is not None else f"vqa_rad-mevf-{source_id}"
        yield vqa_sample(id=sample_id, question=question, answer=answer, meta=meta,  # type: ignore[arg-type]
                         image=image, image_root=root)

