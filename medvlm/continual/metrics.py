"""Forgetting metrics over an accuracy matrix (METHODS.md §5).

``accuracy[t][i]`` is the accuracy (percent) on probe i after training through task t; row 0 is the
initial model (b_i), rows 1..T follow the tasks, and the first T columns are the tasks' own probes
(further columns, e.g. the general probe, are only used for general-ability retention). With a_{t,i}
for t ≥ 1:

* Last = mean_i a_{T,i}
* Avg = mean_{t=1..T} mean_{i≤t} a_{t,i}
* BWT = mean_{i<T} (a_{T,i} − a_{i,i})                      (None when T = 1)
* FWT = mean_{i≥2} (a_{i−1,i} − b_i)                         (None when T = 1)
* Forgetting = mean_{i<T} (max_{1≤l<T} a_{l,i} − a_{T,i})   (None when T = 1; the max runs over the
  task rows l = 1..T−1, as METHODS.md writes it, not over the initial model)
* general retention = a_{T,g} / a_{0,g} on the general probe g (a ratio; None when a_{0,g} = 0)

**Accuracy of a probe set** (medvlm's definition, used for every cell): strict accuracy over all its
items, closed and open together — (closed items whose parsed label is correct + open items that
match exactly after normalisation) / n, pooled over the probe's sources.
"""

from __future__ import annotations

from statistics import mean
from typing import Any

from medvlm.errors import MedvlmError

ACCURACY_DEFINITION = ("strict accuracy over all items of the probe set: (closed correct by parsed label + "
                       "open exact match after normalisation) / n, percent, pooled over the probe's sources")


def probe_accuracy(scores: list[dict[str, Any]]) -> float:
    """Pooled strict accuracy (percent) from the ``scores.json`` of each source of one probe."""
    correct = 0.0
    total = 0
    for result in scores:
        strict = result["metrics"]["strict"]
        n_closed, n_open = int(strict["n_closed"]), int(strict["n_open"])
        correct += (strict["closed_accuracy"] or 0.0) / 100.0 * n_closed
        correct += (strict["open_exact_match"] or 0.0) / 100.0 * n_open
        total += n_closed + n_open
    if total == 0:
        raise MedvlmError("a probe set has no scored item")
    return round(100.0 * correct / total, 4)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def continual_metrics(accuracy: list[list[float]], n_tasks: int, general_column: int | None = None,
                      *, per_task: bool = True) -> dict[str, float | None]:
    """Avg, Last, BWT, FWT, Forgetting and general retention of a complete matrix (T + 1 rows).

    ``per_task=False``: the columns are not the tasks' own probes (a guarded pipeline whose stages
    have none, e.g. an alignment stage on captions), so only general retention is defined; the task
    metrics are None.
    """
    T = n_tasks
    if T < 1 or len(accuracy) != T + 1 or (per_task and any(len(row) < T for row in accuracy)):
        raise MedvlmError(f"accuracy matrix must have {T + 1} rows (initial + one per task) and at least "
                          f"{T} columns; got {len(accuracy)} rows")
    a = accuracy
    retention = None
    if general_column is not None and a[0][general_column] > 0:
        retention = a[T][general_column] / a[0][general_column]
    if not per_task:
        return {"avg": None, "last": None, "bwt": None, "fwt": None, "forgetting": None,
                "general_retention": _round(retention)}
    last = mean(a[T][i] for i in range(T))
    avg = mean(mean(a[t][i] for i in range(t)) for t in range(1, T + 1))
    bwt = mean(a[T][i] - a[i + 1][i] for i in range(T - 1)) if T > 1 else None
    fwt = mean(a[i][i] - a[0][i] for i in range(1, T)) if T > 1 else None
    forgetting = (mean(max(a[row][i] for row in range(1, T)) - a[T][i] for i in range(T - 1))
                  if T > 1 else None)
    return {"avg": _round(avg), "last": _round(last), "bwt": _round(bwt), "fwt": _round(fwt),
            "forgetting": _round(forgetting), "general_retention": _round(retention)}
