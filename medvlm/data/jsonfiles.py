"""JSON / JSONL record files with errors that point at the line and column.

Every reader of a published JSON format goes through here, so a truncated download or a stray
comma becomes "file.json: not valid JSON at line 12 column 5: ..." rather than a traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from medvlm.errors import DataError
from medvlm.io import parse_json, read_json

load_json = read_json  # not found, not UTF-8, not JSON, nested absurdly deep: one-line errors


def iter_records(path: str | Path, on_bad_line: Callable[[str, DataError], None] | None = None,
                 ) -> Iterator[tuple[str, Any]]:
    """(location, record) pairs from a JSON array file or a JSONL file.

    The location ("#12" for the 12th array item, "line 12" for JSONL) identifies records that have no
    usable id of their own. A JSONL line that is not JSON is an error, or, given ``on_bad_line``, a bad
    record handed to it (with its location) and passed over: the other lines are still records.
    """
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        if not path.is_file():
            raise DataError("file not found", file=str(path))
        with open(path, "rb") as handle:  # decoded line by line, so a bad byte is reported with its line
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = parse_json(line, file=str(path), line=number)
                except DataError as exc:
                    if on_bad_line is None:
                        raise
                    on_bad_line(f"line {number}", exc)
                    continue
                yield f"line {number}", record
        return
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"expected a JSON array of records, got {type(data).__name__}", file=str(path))
    for index, record in enumerate(data):
        yield f"#{index}", record
