"""The report draws SAC's per-task ratio sweep (validation score and general retention vs r)."""

from __future__ import annotations

import json
from pathlib import Path

from medvlm.continual.record import ContinualRecord
from medvlm.eval.report import build_report


def test_continual_run_with_ratio_sweeps_is_reported(tmp_path: Path) -> None:
    sweep = {"criterion": "floor", "metric": "accuracy", "retention_floor": 0.9, "weight": 1.0, "chosen": 0.4,
             "validation_samples": 64, "general_samples": 100, "baseline_general_accuracy": 80.0,
             "results": [{"ratio": 0.2, "validation": 40.0, "general_accuracy": 79.0, "retention": 0.9875},
                         {"ratio": 0.4, "validation": 55.0, "general_accuracy": 74.0, "retention": 0.925},
                         {"ratio": 1.0, "validation": 70.0, "general_accuracy": 50.0, "retention": 0.625}]}
    ContinualRecord(method="sac+uir", seed=0, tasks=["a", "b"], probes=["a", "b", "general"],
                    accuracy=[[10, 20, 80], [60, 20, 76], [50, 65, 74]],
                    metrics={"last": 57.5, "general_retention": 0.925},
                    ratio_sweeps={"a": sweep, "b": {**sweep, "metric": "loss"}}).write(tmp_path / "continual.json")
    report = build_report([tmp_path / "continual.json"], tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert report["continual"][0]["ratio_sweeps"]["a"]["chosen"] == 0.4
    assert html.count('alt="ratio sweep sac+uir"') == 1
    assert "0.4: 55.00 / 0.925" in html and "retention ≥ 0.9" in html
    assert json.loads((tmp_path / "report.json").read_text())["continual"][0]["ratio_sweeps"]["b"]["metric"] == "loss"
