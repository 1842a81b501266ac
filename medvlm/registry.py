"""Name → callable registries filled by a decorator.

Sources, templates, prompt styles, metrics, consolidators, continual guards and model families are
each looked up by the name a recipe gives, so adding one is a new file with a decorated function and
nothing else to edit.

The registries are declared here, at the bottom of the layers, each with the package (or module)
whose modules fill it: recipe validation and the command line's choices read the names from here,
and the first lookup imports the filling package. That lazy import is the one way a lower layer
reaches the plugins of a higher one; nothing imports a plugin module directly.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medvlm.errors import MedvlmError

T = TypeVar("T")


class Registry(Generic[T]):
    """``package``: the package whose modules register the items; they are imported on the first
    lookup, so a registry is complete whatever the caller happened to import before."""

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._package = package

    def _load(self) -> None:
        package, self._package = self._package, None
        if package is not None:
            loaded = importlib.import_module(package)
            for module in pkgutil.iter_modules(getattr(loaded, "__path__", [])):  # a module has no __path__
                importlib.import_module(f"{package}.{module.name}")

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = item
            return item

        return decorator

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise MedvlmError(self.unknown(name)) from None

    def unknown(self, name: str) -> str:
        """The message for a name that is not registered: the nearest known one and the full list."""
        self._load()
        close = difflib.get_close_matches(str(name), self._items, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} '{name}'{hint}; known: {', '.join(sorted(self._items))}"

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


SOURCES: Registry = Registry("dataset source", package="medvlm.data.sources")
TEMPLATES: Registry = Registry("conversation template", package="medvlm.data.templates")
PROMPT_STYLES: Registry = Registry("prompt style", package="medvlm.data.prompts")
METRICS: Registry = Registry("metric", package="medvlm.eval.metrics")
CONSOLIDATORS: Registry = Registry("consolidator", package="medvlm.continual")
GUARDS: Registry = Registry("continual guard", package="medvlm.continual")
# the settings section (a pydantic model) of a consolidator or guard, under the component's name
METHOD_SETTINGS: Registry = Registry("continual method settings", package="medvlm.continual")
FAMILIES: Registry = Registry("model family", package="medvlm.model.families")
