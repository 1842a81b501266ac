"""Paired comparison of two systems answering the same questions.

Items are paired by question id. Every per-item value of the registered metric families
(:mod:`medvlm.eval.metrics`) is compared: binary ones (closed-question accuracies) by the exact
McNemar test, the others (open-question recall, exact match, F1) by a paired bootstrap p-value.
Every difference (system − baseline, percentage points) comes with a paired-bootstrap 95 % interval
from the same resampled items.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medvlm.eval.metrics import item_values
from medvlm.eval.stats import mcnemar_exact, paired_bootstrap, rng_for


def _by_qid(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(item["question_id"]): item for item in items}


def paired_comparison(items: list[dict[str, Any]], baseline_items: list[dict[str, Any]], *, n_boot: int,
                      seed: int, label: str = "") -> dict[str, Any]:
    """System (``items``) minus baseline on every item metric, over the question ids both answered."""
    system, baseline = _by_qid(items), _by_qid(baseline_items)
    shared = [qid for qid in system if qid in baseline]
    tests: dict[str, Any] = {}
    for metric in item_values():
        pairs = [(system[q], baseline[q]) for q in shared
                 if system[q]["answer_type"] == metric.answer_type and baseline[q]["answer_type"] == metric.answer_type]
        if not pairs:
            continue
        a = np.array([metric.value(s) for s, _ in pairs])
        b = np.array([metric.value(t) for _, t in pairs])
        boot = paired_bootstrap(a, b, n_boot, rng_for(seed, "compare", metric.name))
        test: dict[str, Any] = {"system": float(a.mean()), "baseline": float(b.mean()),
                                "difference": boot.difference, "ci_low": _num(boot.ci_low),
                                "ci_high": _num(boot.ci_high), "n": len(pairs)}
        if metric.mcnemar:
            result = mcnemar_exact(a > 0, b > 0)
            test.update({"test": "mcnemar_exact", "p_value": result.p_value,
                         "system_only_correct": result.b, "baseline_only_correct": result.c})
        else:
            test.update({"test": "paired_bootstrap", "p_value": _num(boot.p_value)})
        tests[metric.name] = test
    return {"baseline": label, "n_paired": len(shared), "only_in_system": len(system) - len(shared),
            "only_in_baseline": len(baseline) - len(shared), "tests": tests}


def _num(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
