"""The house's layering (DESIGN.md), checked mechanically over every import in ``medvlm/``.

A module imports only from its own layer or below, and no chain of imports leads back to where it
started. Function-level (lazy) imports count like any other: they are dependencies all the same.
The registries' lazy loading of their plugin packages (``medvlm.registry``) goes through importlib
by name and is the one sanctioned way a lower layer reaches plugins above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "medvlm"

# lowest first; a module belongs to the first entry that is it or a package above it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("medvlm", "medvlm.errors", "medvlm.io", "medvlm.registry", "medvlm.provenance",
                    "medvlm.distributed", "medvlm.rundir", "medvlm.resources", "medvlm.claims", "medvlm.bounds")),
    ("recipe", ("medvlm.recipe",)),
    ("data", ("medvlm.data",)),
    ("model", ("medvlm.model",)),
    ("train", ("medvlm.train",)),
    ("continual", ("medvlm.continual",)),
    ("eval", ("medvlm.eval",)),
    ("serve", ("medvlm.serve",)),
    ("runs", ("medvlm.runs",)),
    ("cli", ("medvlm.cli", "medvlm.__main__")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    best = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if prefix == "medvlm" and module != "medvlm":
                continue  # the package itself is a foundation; its subpackages are not
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (index, len(prefix))
    assert best is not None, f"{module} belongs to no layer: add it to LAYERS (and to DESIGN.md's layout)"
    return best[0]


def imports_of(module: str) -> set[str]:
    """The medvlm modules ``module`` imports (``from medvlm.x import y`` is medvlm.x.y when that is a module)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "medvlm")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "medvlm":
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    found.discard(module)
    return {name for name in found if name in MODULES}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_upward_import(module: str) -> None:
    own = layer_of(module)
    upward = sorted(f"{target} ({LAYERS[layer_of(target)][0]})" for target in GRAPH[module]
                    if layer_of(target) > own)
    assert not upward, f"{module} ({LAYERS[own][0]}) imports from a higher layer: {', '.join(upward)}"


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The walk resolves relative and from-imports to modules, so an upward import cannot hide."""
    assert "medvlm.train.stage" in GRAPH["medvlm.runs.pipeline"]
    assert "medvlm.data.records" in GRAPH["medvlm.data.sources.llava"]
    assert layer_of("medvlm.runs.pipeline") > layer_of("medvlm.train.stage") > layer_of("medvlm.model.build")
