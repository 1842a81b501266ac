"""Forgetting metrics against a hand-computed accuracy matrix (METHODS.md §5)."""

from __future__ import annotations

import pytest

from medvlm.continual.metrics import continual_metrics, probe_accuracy
from medvlm.errors import MedvlmError

# rows: initial model, after task 1, 2, 3; columns: task 1, 2, 3 probes, then the general probe.
MATRIX = [
    [95.0, 20.0, 30.0, 80.0],
    [70.0, 25.0, 35.0, 60.0],
    [50.0, 75.0, 40.0, 50.0],
    [40.0, 60.0, 90.0, 40.0],
]


def test_metrics_of_a_hand_computed_matrix() -> None:
    metrics = continual_metrics(MATRIX, n_tasks=3, general_column=3)
    assert metrics["last"] == pytest.approx((40 + 60 + 90) / 3, abs=1e-4)  # 63.3333
    assert metrics["avg"] == pytest.approx((70 + (50 + 75) / 2 + (40 + 60 + 90) / 3) / 3, abs=1e-4)  # 65.2778
    assert metrics["bwt"] == pytest.approx(((40 - 70) + (60 - 75)) / 2)  # -22.5
    assert metrics["fwt"] == pytest.approx(((25 - 20) + (40 - 30)) / 2)  # 7.5: b_1 = 95 plays no part
    # max over task rows l < T only: the initial 95 on task 1 is not "learned then forgotten"
    assert metrics["forgetting"] == pytest.approx(((70 - 40) + (75 - 60)) / 2)  # 22.5
    assert metrics["general_retention"] == pytest.approx(0.5)


def test_single_task_has_no_transfer_terms_and_zero_base_has_no_retention() -> None:
    metrics = continual_metrics([[10.0, 0.0], [80.0, 30.0]], n_tasks=1, general_column=1)
    assert metrics["last"] == 80.0 and metrics["avg"] == 80.0
    assert metrics["bwt"] is None and metrics["fwt"] is None and metrics["forgetting"] is None
    assert metrics["general_retention"] is None


def test_matrix_shape_is_checked() -> None:
    with pytest.raises(MedvlmError, match="4 rows"):
        continual_metrics(MATRIX[:3], n_tasks=3)


def _scores(closed: float | None, n_closed: int, exact: float | None, n_open: int) -> dict:
    return {"metrics": {"strict": {"closed_accuracy": closed, "n_closed": n_closed,
                                   "open_exact_match": exact, "n_open": n_open}}}


def test_probe_accuracy_pools_closed_and_open_items_over_sources() -> None:
    # source 1: 5/10 closed + 1/5 open; source 2: no closed, 3/5 open → 9/20
    assert probe_accuracy([_scores(50.0, 10, 20.0, 5), _scores(None, 0, 60.0, 5)]) == pytest.approx(45.0)
    with pytest.raises(MedvlmError):
        probe_accuracy([_scores(None, 0, None, 0)])


def test_figures_are_written(tmp_path) -> None:
    from medvlm.eval.plots import plot_continual_methods

    record = {"tasks": ["a", "b", "c"], "probes": ["a", "b", "c", "general"]}
    stats = {key: {"mean": 1.0, "std": 0.5, "n": 2} for key in ("last", "bwt", "general_retention")}
    result = {"setup": {"tasks": record["tasks"], "probes": record["probes"]},
              "methods": {name: {"seeds": [0, 1], "accuracy_mean": MATRIX, **stats} for name in ("seq-ft", "sac")}}
    path = plot_continual_methods(result, tmp_path / "all.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
