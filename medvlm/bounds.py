"""Bounded walks over nested data read from user files (pickles, YAML, JSON).

Formats with references (pickle's memo, YAML anchors and aliases) can describe a structure whose
*expanded* size is exponential in the file size (a 220-byte pickle, a 1 KB "billion laughs" YAML)
or that contains itself. Anything that walks such a value naively — a type check, ``repr``, a
schema validator, ``yaml.dump`` — hangs or floods. :func:`check_tree` measures a value once per
distinct object (so it is linear in what is really in memory), refuses cycles, and bounds the
nesting depth and the expanded size before any other code walks it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: Generous for real data (a LLaVA conversation file is ~10 levels deep) and far below the
#: interpreter's recursion limit, so recursive consumers of a checked value cannot overflow.
MAX_DEPTH = 100
CONTAINERS = (list, tuple, dict, set, frozenset)


class TreeError(ValueError):
    """A value is cyclic, nested too deeply, or expands beyond the size bound; ``path`` says where."""

    def __init__(self, message: str, path: str) -> None:
        shown = path if len(path) <= 80 else "..." + path[-77:]
        super().__init__(f"{shown}: {message}")
        self.path = path


def _path(link: tuple | None) -> str:
    parts: list[str] = []
    while link is not None:
        link, part = link
        parts.append(part)
    return "".join(reversed(parts)) or "<root>"


def _children(node: Any) -> list[tuple[Any, str]]:
    if isinstance(node, dict):
        return [(key, " key") for key in node] + [(value, f"[{key!r:.40}]") for key, value in node.items()]
    return [(item, f"[{index}]") for index, item in enumerate(node)]


def check_tree(value: Any, *, max_nodes: int, max_depth: int = MAX_DEPTH,
               leaf: Callable[[Any, str], None] | None = None) -> int:
    """The expanded node count of ``value`` (each shared reference counted every time it is reached).

    Raises :class:`TreeError` for a cycle, a depth beyond ``max_depth`` or more than ``max_nodes``
    expanded nodes; ``leaf(value, path)`` is called once per distinct non-container object and may
    raise to refuse it. Work is linear in the number of distinct objects.
    """
    sizes: dict[int, int] = {}
    open_ids: set[int] = set()
    # (node, link to its path, depth, children already pushed)
    stack: list[tuple[Any, tuple | None, int, bool]] = [(value, None, 0, False)]
    while stack:
        node, link, depth, expanded = stack.pop()
        if not isinstance(node, CONTAINERS):
            if leaf is not None and id(node) not in sizes:
                leaf(node, _path(link))
            sizes[id(node)] = 1
            continue
        ident = id(node)
        if expanded:
            open_ids.discard(ident)
            total = 1 + sum(sizes[id(child)] for child, _ in _children(node))
            if total > max_nodes:
                raise TreeError(f"expands to more than {max_nodes:,} values (shared references "
                                "repeated many times over?)", _path(link))
            sizes[ident] = total
            continue
        if ident in sizes:
            continue
        if ident in open_ids:
            raise TreeError("contains itself (a reference cycle); plain data has none", _path(link))
        if depth >= max_depth:
            raise TreeError(f"nested more than {max_depth} levels deep", _path(link))
        open_ids.add(ident)
        stack.append((node, link, depth, True))
        stack.extend((child, (link, part), depth + 1, False) for child, part in _children(node)
                     if id(child) not in sizes)
    return sizes[id(value)]
