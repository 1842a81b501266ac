"""PathVQA (He et al., 2020; MIT, images © the book publishers and PEIR) in its three published forms.

* **Original pickles** ``pvqa/qas/{train,val,test}/{split}_qa.pkl``: a list of ``{"image",
  "question", "answer"}`` dicts, images in ``pvqa/images/{split}/<image>.jpg``. A pickle can run code,
  so it is read with :mod:`medvlm.data.safe_pickle` (plain containers and scalars only; anything else
  is refused and never executed).
* **LXMERT JSON** of the official repository (``pvqa_{split}.json``): one entry per image,
  ``{"img_id", "labelf": {"pvqa": [{answer: score}]}, "sentf": {"pvqa": [question]}}``; entries
  with empty lists are images without questions.
* **Hugging Face parquet** (``data/{split}-*.parquet``: image bytes, question, answer; read through
  the ``hf`` source, so embedded images land in its image cache). This conversion de-duplicated the
  QA (6,719 test QA instead of 6,761) and dropped the image names, so its ids are row numbers.

``path`` is a file or a folder holding one of them (``format``: auto | pickle | lxmert | parquet).
Closed questions are those answered yes/no (3,391 of the 6,761 test QA). ``meta.question_type`` is
the paper's question category: ``yes/no`` for closed questions, else the leading question word
(what, where, when, whose, how, which, who, why; ``how much/many`` for "how much"/"how many"), or
``other``. Ids: ``<image>-<k>``, the k-th question about that image in file order (the same in the
pickle and LXMERT forms when they list questions in the same order).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvlm.data import fields, safe_pickle
from medvlm.data.fields import Invalid
from medvlm.data.jsonfiles import iter_records
from medvlm.data.records import Sample, SampleMeta, vqa_sample
from medvlm.data.sources import ReadReport, register_source
from medvlm.data.sources.hf import read_rows
from medvlm.errors import DataError

SPLITS = ("train", "val", "test")
FORMATS = ("auto", "pickle", "lxmert", "parquet")
QUESTION_WORDS = ("what", "where", "when", "whose", "how", "which", "who", "why")


def question_category(question: str, answer_type: str) -> str:
    if answer_type == "CLOSED":
        return "yes/no"
    words = question.lower().replace("?", " ").split()
    if words[:2] in (["how", "much"], ["how", "many"]):
        return "how much/many"
    return words[0] if words and words[0] in QUESTION_WORDS else "other"


def locate(path: str, split: str, fmt: str) -> tuple[Path, str]:
    given = Path(path)
    if not given.exists():
        raise DataError("file or folder not found", file=path)
    if given.is_file():
        by_suffix = {".pkl": "pickle", ".pickle": "pickle", ".json": "lxmert", ".parquet": "parquet"}
        detected = by_suffix.get(given.suffix.lower())
        if fmt == "auto" and detected is None:
            raise DataError("cannot tell the format from the suffix; set option format", file=path)
        return given, detected if fmt == "auto" else fmt
    candidates = {
        "pickle": [given / "qas" / split / f"{split}_qa.pkl", given / split / f"{split}_qa.pkl",
                   given / f"{split}_qa.pkl"],
        "lxmert": [given / f"pvqa_{split}.json"],
    }
    for name, paths in candidates.items():
        found = fields.first_existing(paths) if fmt in ("auto", name) else None
        if found:
            return found, name
    if fmt in ("auto", "parquet") and any(given.rglob("*.parquet")):
        return given, "parquet"
    raise DataError(f"no PathVQA {split} data here (looked for qas/{split}/{split}_qa.pkl, "
                    f"pvqa_{split}.json and parquet files)", file=path)


def default_image_root(data_file: Path, split: str) -> Path:
    folder = data_file.parent
    return fields.first_existing([folder / "images" / split, folder.parent / "images" / split,
                                  folder.parent.parent / "images" / split]) or folder


def _qa_pairs_pickle(data_file: Path, report: ReadReport) -> Iterator[tuple[str, str, Any, Any]]:
    """(location, image, question, answer) from an original ``*_qa.pkl``."""
    data = safe_pickle.load(data_file)
    if not isinstance(data, list):
        raise DataError(f"expected a list of QA dicts, got {type(data).__name__}", file=str(data_file))
    for index, record in enumerate(data):
        report.read += 1
        if not isinstance(record, dict):
            report.problem(f"expected a dict, got {type(record).__name__}", file=str(data_file), record=f"#{index}")
            continue
        yield f"#{index}", record.get("image"), record.get("question"), record.get("answer")


def _qa_pairs_lxmert(data_file: Path, report: ReadReport) -> Iterator[tuple[str, str, Any, Any]]:
    """(location, image, question, answer) from the LXMERT-format JSON (one entry per image)."""
    file = str(data_file)
    for location, entry in iter_records(data_file):
        if not isinstance(entry, dict):
            report.read += 1
            report.problem(f"expected an object, got {type(entry).__name__}", file=file, record=location)
            continue
        image = entry.get("img_id", location)
        try:
            labels = (entry.get("labelf") or {}).get("pvqa") if isinstance(entry.get("labelf"), dict) else None
            questions = (entry.get("sentf") or {}).get("pvqa") if isinstance(entry.get("sentf"), dict) else None
            if not isinstance(labels, list):
                raise Invalid("expected {\"pvqa\": [ {answer: score}, ... ]}", "labelf")
            if not isinstance(questions, list):
                raise Invalid("expected {\"pvqa\": [question, ...]}", "sentf")
            if len(labels) != len(questions):
                raise Invalid(f"{len(questions)} questions but {len(labels)} answers", "labelf.pvqa")
        except Invalid as bad:
            report.read += 1
            report.problem(bad.message, file=file, record=str(image), key=bad.key)
            continue
        for k, (label, question) in enumerate(zip(labels, questions, strict=True)):
            report.read += 1
            if not isinstance(label, dict) or not label:
                report.problem("expected {answer: score}", file=file, record=f"{image}-{k}", key=f"labelf.pvqa[{k}]")
                continue
            answer = max(label.items(), key=lambda item: item[1] if isinstance(item[1], (int, float)) else 0)[0]
            yield f"{image}-{k}", image, question, answer


def _samples(pairs: Iterator[tuple[str, Any, Any, Any]], report: ReadReport, *, file: str, split: str,
             root: str) -> Iterator[Sample]:
    per_image: dict[str, int] = {}
    ids = fields.UniqueIds("id")
    for location, image, question, answer in pairs:
        record = {"image": image, "question": question, "answer": answer}
        try:
            image_id = fields.text(record, "image", numbers=True)
            question_text = fields.text(record, "question")
            answer_text = fields.text(record, "answer", numbers=True)
            k = per_image.get(image_id, 0)  # type: ignore[arg-type]
            per_image[image_id] = k + 1  # type: ignore[index]
            source_id = f"{image_id}-{k}"
            ids.add(source_id)
        except Invalid as bad:
            report.problem(bad.message, file=file, record=location, key=bad.key)
            continue
        answer_type = fields.closed_by_answer(answer_text)  # type: ignore[arg-type]
        meta = SampleMeta(dataset="pathvqa", split=split, answer_type=answer_type,  # type: ignore[arg-type]
                          question_type=question_category(question_text, answer_type),  # type: ignore[arg-type]
                          language="en", source_id=source_id, extra={"image_id": image_id})
        image_name = image_id if Path(image_id).suffix else f"{image_id}.jpg"  # type: ignore[arg-type]
        yield vqa_sample(id=f"pathvqa-{source_id}", question=question_text, answer=answer_text,  # type: ignore[arg-type]
                         meta=meta, image=image_name, image_root=root)


@register_source("pathvqa")
def read(path: str | None, split: str, report: ReadReport, image_root: str | None = None,
         format: str = "auto", image_cache: str | None = None, **options: Any) -> Iterator[Sample]:
    if path is None:
        raise DataError("the pathvqa source needs a path: a *_qa.pkl, a pvqa_<split>.json, parquet files, "
                        "or the folder holding them")
    fields.check_options("pathvqa", options, (), file=path)
    if format not in FORMATS:
        raise DataError(f"option format must be one of {', '.join(FORMATS)}", file=path, key="format")
    split = fields.canonical_split(split, SPLITS, file=path)
    data_file, fmt = locate(path, split, format)
    if fmt == "parquet":
        for sample in read_rows(str(data_file), split, report, name="pathvqa", image_root=image_root,
                                columns=None, image_cache=image_cache, closed_rule="yesno"):
            sample.meta.question_type = question_category(sample.question, sample.meta.answer_type or "OPEN")
            yield sample
        return
    root = image_root if image_root is not None else str(default_image_root(data_file, split))
    pairs = _qa_pairs_pickle(data_file, report) if fmt == "pickle" else _qa_pairs_lxmert(data_file, report)
    yield from _samples(pairs, report, file=str(data_file), split=split, root=root)
