"""User-facing errors.

Everything a user can get wrong (a recipe key, a data record, a path) raises a subclass of
:class:`MedvlmError`. The CLI turns these into one readable line and exit status 2; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxlevel = 3
_SHORT.maxtuple = _SHORT.maxlist = _SHORT.maxdict = _SHORT.maxset = _SHORT.maxfrozenset = 4
_SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 60, 40, 60


def shorten(value: object, limit: int = 120) -> str:
    """A bounded ``repr`` for error messages.

    Values in messages come from user files; a plain ``repr`` of a YAML alias bomb or a huge list
    takes minutes and prints gigabytes. ``reprlib`` stops after a few levels and items, and the
    result is cut to ``limit`` characters.
    """
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A library exception as one bounded line (``Type: first line``) for a wrapping message."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# torch's weights-only loader refused a pickled file: what a message says instead of torch's own text,
# which advises loading the file unrestricted
PICKLE_REFUSED = "holds more than plain tensors (code or objects): refused, nothing in it was run"


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
        # A message re-raised with its location (str(exc) of an inner DataError) must not repeat it:
        # "key 'image': key 'image': ..." is noise.
        for part in where:
            message = message.removeprefix(f"{part}: ")
        self.detail = message
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class ModelError(MedvlmError):
    """A model directory or configuration cannot be used as asked."""


class OutputError(MedvlmError):
    """An output path cannot be written as asked (it is a directory, lies under a file, holds
    someone else's files, or is in use by another run)."""
