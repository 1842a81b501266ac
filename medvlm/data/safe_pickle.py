"""Loading published pickles without running them.

A pickle is a program: ``pickle.load`` will import and call whatever the file names (``os.system``
included). Some datasets are only published as pickles (PathVQA's ``qas/*.pkl``), so medvlm reads
them with an unpickler that resolves no global except a short allow-list of harmless constructors.
The opcodes for lists, dicts, tuples, strings, bytes, numbers, booleans and None need no global at
all; anything that does (a class, a function, ``numpy`` arrays, ``__reduce__`` tricks) is refused
*before* it is called, and the loaded object is checked to contain plain data only.

The check is bounded (:func:`medvlm.bounds.check_tree`): a pickle's memo lets a few hundred bytes
describe a self-referencing list or a structure whose expanded size is exponential, so cycles,
nesting deeper than :data:`~medvlm.bounds.MAX_DEPTH` and more than :data:`MAX_VALUES` expanded values
are refused before anything walks the result.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Any

from medvlm.bounds import TreeError, check_tree
from medvlm.errors import DataError

#: Expanded values a pickle may hold (PathVQA's largest split: ~20k records of ~10 values each).
MAX_VALUES = 20_000_000


def _bytearray(source: Any = b"", *args: Any) -> bytearray:
    """``bytearray`` from bytes or text only: ``bytearray(10**12)`` would allocate a terabyte."""
    if isinstance(source, int):
        raise _Refused("refused bytearray(<size>): only bytearrays of given contents are allowed")
    return bytearray(source, *args)

#: (module, name) → callable that may be used while loading. None of these can run code or touch
#: files; ``_codecs.encode`` is how Python 3 pickles ``bytes`` at protocols 0–2.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "complex"): complex,
    ("__builtin__", "set"): set,  # Python 2 pickles
    ("__builtin__", "frozenset"): frozenset,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): lambda text, encoding="utf-8", errors="strict": text.encode(encoding, errors),
}

PLAIN_SCALARS = (str, bytes, bytearray, int, float, complex, bool, type(None))
PLAIN_CONTAINERS = (list, tuple, dict, set, frozenset)


class UnsafePickle(DataError):
    """The pickle asks for something beyond plain data; it was not executed."""


class _Refused(pickle.UnpicklingError):
    """Raised by the unpickler for anything beyond plain data (kept apart from corrupt-file errors)."""


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise _Refused(f"refused to load global '{module}.{name}': only plain containers "
                                         "and scalars are allowed")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("refused a persistent id: only plain containers and scalars are allowed")


def _plain_leaf(item: Any, path: str) -> None:
    if not isinstance(item, PLAIN_SCALARS):
        raise TypeError(f"{path} is a {type(item).__name__}")


def check_plain(value: Any, max_values: int = MAX_VALUES) -> None:
    """Raise ``TypeError`` naming the first value that is not plain data, :class:`TreeError` for a
    cycle, too deep a nesting or too many values (each distinct object is visited once)."""
    check_tree(value, max_nodes=max_values, leaf=_plain_leaf)


def loads(data: bytes, *, file: str | None = None) -> Any:
    try:
        value = RestrictedUnpickler(io.BytesIO(data)).load()
        check_plain(value)
    except _Refused as exc:
        raise UnsafePickle(f"unsafe pickle, not executed: {exc}", file=file) from None
    except TypeError as exc:
        raise UnsafePickle(f"unsafe pickle: {exc}", file=file) from None
    except TreeError as exc:
        raise DataError(f"refused pickle: {exc}", file=file) from None
    except MemoryError:
        raise DataError("refused pickle: it asks for more memory than is available", file=file) from None
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError, AttributeError,
            UnicodeDecodeError) as exc:
        raise DataError(f"not a readable pickle ({type(exc).__name__}: {exc})", file=file) from None
    return value


def load(path: str | Path) -> Any:
    """Plain data from a pickle file, or :class:`UnsafePickle` / :class:`DataError`."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    return loads(path.read_bytes(), file=str(path))
