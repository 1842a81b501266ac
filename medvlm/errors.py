"""User-facing errors.

Everything a user can get wrong (a recipe key, a data record, a path) raises a subclass of
:class:`MedvlmError`. The CLI turns these into one readable line and exit status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedvlmError(Exception):
    """Bad input from the user: the message says what is wrong and where."""

    exit_code = 2


class RecipeError(MedvlmError):
    """A recipe file, key or override is invalid."""


class DataError(MedvlmError):
    """A data file or record is invalid.

    The message names the file, the record id and the key, so the user can open the file and fix it.
    """

    def __init__(self, message: str, *, file: str | None = None, record: str | None = None,
                 key: str | None = None) -> None:
        self.file, self.record, self.key = file, record, key
        where = []
        if file is not None:
            where.append(str(file))
        if record is not None:
            where.append(f"record {record}")
        if key is not None:
            where.append(f"key '{key}'")
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class ModelError(MedvlmError):
    """A model directory or configuration cannot be used as asked."""
