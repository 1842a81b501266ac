"""The continual benchmark's figure: every method's mean accuracy matrix and their metrics side by side.

One run's matrix is drawn by the evaluation report (``medvlm report``); this figure compares methods
over seeds for ``bench/continual_forgetting.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from medvlm.eval.plots import draw_matrix  # noqa: E402


def plot_runs(result: dict[str, Any], path: str | Path) -> Path:
    """Mean accuracy matrix per method, and Last / BWT / general retention (mean ± std) per method."""
    methods = result["methods"]
    tasks, probes = result["setup"]["tasks"], result["setup"]["probes"]
    names = list(methods)
    columns = min(4, len(names))
    heat_rows = -(-len(names) // columns)
    fig = plt.figure(figsize=(4.2 * columns, 2.6 * heat_rows + 3.4))
    grid = fig.add_gridspec(heat_rows + 1, columns, height_ratios=[2.6] * heat_rows + [3.4])
    for index, name in enumerate(names):
        ax = fig.add_subplot(grid[index // columns, index % columns])
        title = f"{name} (mean of {len(methods[name]['seeds'])})"
        draw_matrix(ax, methods[name]["accuracy_mean"], ["initial", *[f"after {t}" for t in tasks]], probes,
                    cmap="viridis", vmax=100, fontsize=8)
        ax.set_title(title, fontsize=10)
    panels = [("last", "Last (%)", 1.0), ("bwt", "BWT (points)", 1.0),
              ("general_retention", "general retention (%)", 100.0)]
    bottom = grid[heat_rows, :].subgridspec(1, len(panels))
    for k, (key, label, scale) in enumerate(panels):
        ax = fig.add_subplot(bottom[0, k])
        means = [(methods[n][key]["mean"] or 0.0) * scale for n in names]
        stds = [(methods[n][key]["std"] or 0.0) * scale for n in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.axhline(0, color="black", linewidth=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
