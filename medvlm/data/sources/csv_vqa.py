"""A spreadsheet of questions: one VQA item per row of a CSV file (``--dataset csv``).

Many in-house sets arrive as a spreadsheet exported to CSV rather than in a published format. The
header names the columns; the defaults are :data:`COLUMNS` (``question`` and ``answer`` required;
``image`` a path relative to ``image_root``, default the file's folder, empty for a text-only row;
``id`` else the row number; the breakdown fields and ``answer_type`` when present). The option
``columns`` renames them (``{question: Frage, answer: Antwort}``), ``delimiter`` sets the separator.
A ``split`` column keeps the rows of the requested split (``val``/``validation``/... alias each
other); without one the file is a single split. Spreadsheet exports are tolerated: a UTF-8
byte-order mark, quoted cells with commas or line breaks, blank lines.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvlm.data import fields
from medvlm.data.fields import Invalid
from medvlm.data.records import Sample, SampleMeta, vqa_sample
from medvlm.data.sources import ReadReport, register_source
from medvlm.errors import DataError

COLUMNS = {"id": "id", "image": "image", "question": "question", "answer": "answer",
           "answer_type": "answer_type", "modality": "modality", "organ": "organ",
           "question_type": "question_type", "language": "language", "split": "split"}


def _rows(path: Path, delimiter: str, names: dict[str, str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line, row) for the non-blank rows, after checking the header holds the required columns."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=delimiter)
            header = reader.fieldnames or []
            for role in ("question", "answer"):
                if names[role] not in header:
                    raise DataError(f"no '{names[role]}' column (columns.{role}); columns: {', '.join(header)}",
                                    file=str(path), key=f"columns.{role}")
            for row in reader:
                if any((value or "").strip() for value in row.values() if isinstance(value, str)):
                    yield reader.line_num, row
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"not a readable UTF-8 CSV file: {exc}", file=str(path)) from None


def _cell(row: dict[str, str], names: dict[str, str], role: str, *, required: bool = False) -> str | None:
    return fields.text(row, names[role], required=required) if names[role] in row else None


def _split_name(name: str) -> str:
    return fields.SPLIT_ALIASES.get(name.strip().lower(), name.strip().lower())


@register_source("csv")
def read(path: str | None, split: str, report: ReadReport, image_root: str | None = None,
         columns: dict[str, str] | None = None, delimiter: str = ",", **options: Any) -> Iterator[Sample]:
    if path is None or not Path(path).is_file():
        raise DataError("the csv source needs a path to a .csv file", file=path)
    fields.check_options("csv", options, (), file=path)
    unknown = sorted(set(columns or {}) - set(COLUMNS))
    if unknown:
        raise DataError(f"unknown key(s) in option columns: {', '.join(unknown)}; known: {', '.join(COLUMNS)}",
                        file=path, key="columns")
    names = {**COLUMNS, **(columns or {})}
    root = image_root if image_root is not None else str(Path(path).parent)
    ids = fields.UniqueIds(names["id"])
    for line, row in _rows(Path(path), delimiter, names):
        report.read += 1
        where = f"line {line}"
        try:
            row_split = _cell(row, names, "split")
            if row_split is not None and _split_name(row_split) != _split_name(split):
                continue
            source_id = _cell(row, names, "id") or str(line)
            where = source_id
            ids.add(source_id)
            meta = SampleMeta(dataset="csv", split=split, modality=_cell(row, names, "modality"),
                              organ=_cell(row, names, "organ"), question_type=_cell(row, names, "question_type"),
                              language=_cell(row, names, "language") or "en", source_id=source_id)
            if _cell(row, names, "answer_type") is not None:
                meta.answer_type = fields.answer_type(row, names["answer_type"])  # type: ignore[assignment]
            question = _cell(row, names, "question", required=True)
            answer = _cell(row, names, "answer", required=True)
            image = _cell(row, names, "image")
        except Invalid as bad:
            report.problem(bad.message, file=path, record=where, key=bad.key)
            continue
        yield vqa_sample(id=f"csv-{source_id}", question=question, answer=answer, meta=meta,  # type: ignore[arg-type]
                         image=image, image_root=root)
