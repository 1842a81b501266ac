"""JSON / JSONL record files with errors that point at the line and column.

Every reader of a published JSON format goes through here, so a truncated download or a stray
comma becomes "file.json: not valid JSON at line 12 column 5: ..." rather than a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medvlm.errors import DataError


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                        file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text: {exc}", file=str(path)) from None


def iter_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """(location, record) pairs from a JSON array file or a JSONL file.

    The location ("#12" for the 12th array item, "line 12" for JSONL) identifies records that have no
    usable id of their own.
    """
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        if not path.is_file():
            raise DataError("file not found", file=str(path))
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield f"line {number}", json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"line {number} is not valid JSON (column {exc.colno}: {exc.msg})",
                                    file=str(path)) from None
        return
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON array of records, got {type(data).__name__}", file=str(path))
    for index, record in enumerate(data):
        yield f"#{index}", record
