"""Figures for continual runs: the accuracy matrix as a heatmap, and methods side by side.

Plain matplotlib (Agg backend), written to PNG files; the HTML report can embed them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _heatmap(ax, matrix: list[list[float]], tasks: list[str], probes: list[str], title: str) -> None:
    ax.imshow(matrix, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(probes)), probes, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(matrix)), ["initial", *[f"after {t}" for t in tasks]], fontsize=8)
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if value < 50 else "black")
    ax.set_title(title, fontsize=10)


def plot_matrix(record: dict[str, Any], path: str | Path) -> Path:
    """Heatmap of one run's ``continual.json`` accuracy matrix."""
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(record["probes"]), 1.0 + 0.6 * len(record["accuracy"])))
    title = f"{record['method']} (seed {record['seed']})"
    _heatmap(ax, record["accuracy"], record["tasks"], record["probes"], title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


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
        _heatmap(ax, methods[name]["accuracy_mean"], tasks, probes, title)
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
