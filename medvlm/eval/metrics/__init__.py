"""Metric families: one file each in this package, registered in :data:`medvlm.registry.METRICS`.

A family (``llava_med`` parity, ``strict``, ...) is a :class:`Metric` that says everything scoring
and reporting need about it, so scoring, breakdowns, paired comparisons, plots and the report
iterate the registry and name no metric:

* ``item``: its entry in a scored item row (``scores.items.jsonl``) for one OPEN or CLOSED question,
  including a missing prediction (which must score as wrong, never as an empty match);
* ``summary``: its block ``metrics.<name>`` of ``scores.json`` (a contract: DESIGN.md), from its entries
  of the open and of the closed items;
* ``values``: its per-item figures (0–100) that the breakdowns (bootstrap intervals) and paired
  comparisons use, each with its answer type, plot label and colour, whether the exact McNemar test
  applies (binary per item) and its headline column in the report, if it is a headline figure;
* optionally ``analyses`` (further top-level ``scores.json`` entries, e.g. the strict family's
  closed-answer confusion matrix) and ``verdict`` (how the report's error gallery reads the family).

Families are taken in ``order`` (then name). Breakdown intervals draw one random stream per answer
type through the values in that order, so a new family ordered after the existing ones (the
default) leaves every existing figure of ``scores.json`` unchanged; it only adds its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from medvlm import registry
from medvlm.errors import MedvlmError
from medvlm.registry import Registry

AnswerType = Literal["OPEN", "CLOSED"]
ANSWER_TYPES: tuple[AnswerType, ...] = ("OPEN", "CLOSED")


@dataclass(frozen=True)
class Answered:
    """One question as a metric sees it: ``prediction`` None when the answer file has none."""

    answer_type: str  # OPEN | CLOSED
    question: str | None  # the prompt the model was given when the answer file records it, else the question
    reference: str
    prediction: str | None


@dataclass(frozen=True)
class ItemValue:
    """A per-item figure of a family, 0–100: ``100 × row[family][key]`` on items of ``answer_type``.

    ``name`` is ``<family>.<summary key>``: breakdowns and comparisons are keyed by it, and the report
    falls back to the summary figure of that key where a breakdown has no cell.
    """

    name: str
    answer_type: AnswerType
    key: str
    label: str  # plots and tables
    colour: str  # breakdown bars
    mcnemar: bool = False  # binary per item: paired comparisons use the exact McNemar test
    headline: str | None = None  # column heading in the report's headline table ("\n" breaks the line)

    @property
    def family(self) -> str:
        return self.name.split(".", 1)[0]

    def value(self, row: Mapping[str, Any]) -> float:
        entry = row.get(self.family)
        if entry is None:  # breakdowns and paired comparisons need the figure of every item of its type
            raise MedvlmError(
                f"metric family '{self.family}' declares the per-item value '{self.key}' for {self.answer_type} "
                f"questions but did not score question {row.get('question_id')!r}: a family that leaves some "
                f"questions of a type unscored (its item function returns None) must declare no values for it")
        return 100.0 * entry[self.key]


@dataclass(frozen=True)
class Verdict:
    """How the report's error gallery reads a family's judgement of one item.

    ``role`` "strict": errors are ranked by this family's score; "parity": by it next, and items it
    credits in full that the strict family does not are listed as credited only by the lenient metric.
    """

    role: Literal["strict", "parity"]
    score: Mapping[str, str]  # answer type → entry key of the 0–1 score errors are ranked by
    credit: Mapping[str, str]  # answer type → entry key whose value 1.0 is full credit
    reason: str | None = None  # entry key of the reason a gallery card shows


@dataclass(frozen=True)
class Metric:
    name: str  # key of its entry in item rows and of its block in scores.json ``metrics``
    description: str  # scores.json ``provenance.metric_families``
    # None: the family does not score this item (then ``values`` may not cover the item's answer type)
    item: Callable[[Answered], dict[str, Any] | None]
    summary: Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]]  # (open, closed) entries
    values: tuple[ItemValue, ...]
    order: int = 100
    style: str = ""  # CSS class of its headline cells
    analyses: Callable[[list[dict[str, Any]]], dict[str, Any]] | None = None  # item rows → scores.json entries
    verdict: Verdict | None = None


METRICS: Registry[Metric] = registry.METRICS


def register_metric(metric: Metric) -> Metric:
    """Register a family under its name (at import of its module); returns it."""
    for value in metric.values:
        if value.family != metric.name or value.answer_type not in ANSWER_TYPES:
            raise ValueError(f"metric '{metric.name}': value '{value.name}' must be named '{metric.name}.<key>' "
                             f"and be for OPEN or CLOSED items")
    return METRICS.register(metric.name)(metric)


def metrics() -> list[Metric]:
    """Every registered family, in output order."""
    return sorted((METRICS.get(name) for name in METRICS.names()), key=lambda metric: (metric.order, metric.name))


def item_values() -> list[ItemValue]:
    """Every family's per-item values, in output order."""
    return [value for metric in metrics() for value in metric.values]


def with_verdict(role: str) -> Metric:
    """The family that plays ``role`` in the report's error gallery."""
    found = [metric for metric in metrics() if metric.verdict is not None and metric.verdict.role == role]
    if len(found) != 1:
        raise LookupError(f"expected one metric family with the '{role}' verdict, found {len(found)}")
    return found[0]
