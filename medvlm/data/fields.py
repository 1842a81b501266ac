"""Typed access to the fields of published records, shared by the dataset readers.

Published files are messy in small ways (an int where a string is expected, ``"CLOSED "`` with a
trailing space, a key missing from two records out of two thousand). Readers pull each field through
these helpers; anything they cannot coerce raises :class:`Invalid` carrying the offending key, and
the reader turns that into one ``ReadReport.problem(...)`` naming file, record and key.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from medvlm.data.jsonfiles import iter_records
from medvlm.errors import DataError

#: Split names people use for the same thing; readers map them to the file's own name.
SPLIT_ALIASES = {"val": "validate", "validation": "validate", "valid": "validate", "dev": "validate",
                 "eval": "test", "testing": "test", "training": "train"}


class Invalid(Exception):
    """One field of one record cannot be used; ``key`` names it."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.message, self.key = message, key


def require(record: Mapping[str, Any], key: str) -> Any:
    if key not in record:
        raise Invalid("missing key", key)
    return record[key]


def text(record: Mapping[str, Any], key: str, *, numbers: bool = False, required: bool = True,
         nulls: Iterable[str] = ()) -> str | None:
    """A string field, stripped. ``numbers``: accept ints/floats and render them (``4`` → ``"4"``).

    ``nulls`` are placeholder strings meaning "no value" (VQA-RAD writes the literal ``"NULL"``).
    """
    if key not in record or record[key] is None:
        if required:
            raise Invalid("missing key" if key not in record else "value is null", key)
        return None
    value = record[key]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or \
            (not numbers and not isinstance(value, str)):
        raise Invalid(f"expected text, got {type(value).__name__} {value!r}"[:120], key)
    rendered = str(value).strip()
    if rendered in set(nulls):
        return None
    if required and not rendered:
        raise Invalid("empty text", key)
    return rendered or None


def record_id(record: Mapping[str, Any], key: str) -> str:
    """An id that may be published as an int or a digit string (VQA-RAD's first qid is ``"0"``)."""
    value = require(record, key)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise Invalid(f"expected an integer or string id, got {type(value).__name__}", key)
    rendered = str(value).strip()
    if not rendered:
        raise Invalid("empty id", key)
    return str(int(rendered)) if rendered.lstrip("-").isdigit() else rendered


def answer_type(record: Mapping[str, Any], key: str = "answer_type") -> str:
    """``OPEN`` / ``CLOSED``, case and surrounding whitespace ignored (VQA-RAD has ``"CLOSED "``)."""
    value = text(record, key)
    assert value is not None
    upper = value.upper()
    if upper not in ("OPEN", "CLOSED"):
        raise Invalid(f"answer_type {record[key]!r} is neither OPEN nor CLOSED", key)
    return upper


CLOSED_ANSWERS = frozenset({"yes", "no"})


def closed_by_answer(answer: str) -> str:
    """PathVQA's rule (and the usual one for data without a label): yes/no answers are closed."""
    return "CLOSED" if answer.strip().lower() in CLOSED_ANSWERS else "OPEN"


class UniqueIds:
    """Raises :class:`Invalid` on a repeated id, so each read has unique sample and question ids."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._seen: set[str] = set()

    def add(self, value: str) -> None:
        if value in self._seen:
            raise Invalid(f"duplicate {self.key} {value!r}", self.key)
        self._seen.add(value)


def canonical_split(split: str, available: Iterable[str], *, file: str | None = None) -> str:
    """The split name as the dataset spells it; unknown names are an error listing the known ones."""
    names = list(available)
    wanted = split.strip().lower()
    for candidate in (wanted, SPLIT_ALIASES.get(wanted, wanted)):
        for name in names:
            if candidate == name.lower() or SPLIT_ALIASES.get(name.lower()) == candidate:
                return name
    raise DataError(f"unknown split '{split}'; this data has: {', '.join(names)}", file=file, key="split")


def first_existing(candidates: Iterable[Path]) -> Path | None:
    return next((path for path in candidates if path.exists()), None)


def check_options(source: str, options: Mapping[str, Any], known: Iterable[str], *, file: str | None) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DataError(f"unknown option(s) for the {source} source: {', '.join(unknown)}; "
                        f"known: {', '.join(sorted(known)) or 'none'}", file=file)


def object_records(path: str | Path, report: Any, *, file: str | None = None) -> Iterator[tuple[str, dict]]:
    """(location, record) for the JSON objects of a JSON array or JSONL file.

    Every record counts as read in ``report`` (a sources ``ReadReport``); one that is not an object is
    reported there as a problem with its location and skipped, never dropped silently.
    """
    def bad_line(location: str, exc: DataError) -> None:  # under skip: counted like any bad record
        report.read += 1
        report.problem(exc.detail, file=file or str(path), record=location)

    for location, record in iter_records(path, on_bad_line=bad_line):
        report.read += 1
        if not isinstance(record, dict):
            report.problem(f"expected an object, got {type(record).__name__}", file=file or str(path),
                           record=location)
            continue
        yield location, record
