"""Report figures as base64 PNG strings, so report.html is one self-contained file.

matplotlib's Agg backend renders off-screen (no display, no network); PNGs are written without
timestamps so the same scores give the same bytes. Thumbnails are re-encoded from pixels only,
which drops EXIF and every other embedded metadata block (no patient data travels into a report).
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from medvlm.data.images import load_image, resolve_image_path  # noqa: E402
from medvlm.errors import MedvlmError  # noqa: E402
from medvlm.eval.metrics import ANSWER_TYPES, item_values  # noqa: E402

log = logging.getLogger("medvlm")

DPI = 90


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def breakdown_bars(groups: dict[str, dict[str, dict[str, Any]]], title: str) -> str:
    """Horizontal bars per category and metric, with the bootstrap 95 % interval as error bars."""
    categories = list(groups)
    known = {value.name: value for value in item_values()}
    metrics = [name for name in known if any(name in cells for cells in groups.values())]
    bars = {metric: ([], [], [[], []]) for metric in metrics}  # metric → (y, value, [below, above])
    ticks, y = [], 0.0
    for category in categories:
        present = [m for m in metrics if m in groups[category]]
        for slot, metric in enumerate(present):
            cell = groups[category][metric]
            ys, values, errors = bars[metric]
            ys.append(y + slot)
            values.append(cell["value"])
            low = cell["value"] if cell["ci_low"] is None else cell["ci_low"]
            high = cell["value"] if cell["ci_high"] is None else cell["ci_high"]
            errors[0].append(max(cell["value"] - low, 0.0))
            errors[1].append(max(high - cell["value"], 0.0))
        ticks.append(y + (len(present) - 1) / 2)
        y += len(present) + 0.8
    figure, axis = plt.subplots(figsize=(8.5, 0.8 + 0.2 * y))
    for metric, (ys, values, errors) in bars.items():
        axis.barh(ys, values, height=0.9, xerr=errors, color=known[metric].colour, label=known[metric].label,
                  error_kw={"elinewidth": 0.8, "capsize": 2})
    axis.set_yticks(ticks, [f"{c} ({_counts(groups[c])})" for c in categories])
    axis.invert_yaxis()
    axis.set_xlim(0, 100)
    axis.set_xlabel("percent (error bars: 95 % bootstrap interval)")
    axis.set_title(title)
    axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.grid(axis="x", alpha=0.3)
    return _png(figure)


def _counts(cells: dict[str, dict[str, Any]]) -> str:
    """"open n, closed n" of a category: the n of any of its open and of its closed metrics (a
    category's metrics of one answer type are computed over the same items)."""
    parts = []
    for kind in ANSWER_TYPES:
        n = next((cells[v.name]["n"] for v in item_values() if v.answer_type == kind and v.name in cells), None)
        if n is not None:
            parts.append(f"{kind.lower()} {n}")
    return ", ".join(parts)


def draw_matrix(
    axis,
    matrix: list[list[float | None]],
    row_labels: list[str],
    column_labels: list[str],
    *,
    fmt: str = "{:.0f}",
    cmap: str = "Blues",
    vmax: float | None = None,
    fontsize: int = 9,
) -> None:
    """Draw an annotated heat map on ``axis`` (None cells shown as a dash)."""
    data = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    top = vmax if vmax is not None else (float(np.nanmax(data)) if np.isfinite(data).any() else 1.0) or 1.0
    colours = matplotlib.colormaps[cmap]
    axis.imshow(np.ma.masked_invalid(data), cmap=colours, vmin=0, vmax=top, aspect="auto")
    for (i, j), value in np.ndenumerate(data):
        if np.isnan(value):
            axis.text(j, i, "—", ha="center", va="center", fontsize=fontsize)
            continue
        red, green, blue, _ = colours(min(max(value / top, 0.0), 1.0))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        axis.text(j, i, fmt.format(value), ha="center", va="center", fontsize=fontsize,
                  color="white" if dark else "black")
    axis.set_xticks(range(len(column_labels)), column_labels, rotation=30, ha="right", fontsize=fontsize)
    axis.set_yticks(range(len(row_labels)), row_labels, fontsize=fontsize)


def matrix_plot(
    matrix: list[list[float | None]],
    row_labels: list[str],
    column_labels: list[str],
    title: str,
    *,
    xlabel: str,
    ylabel: str,
    fmt: str = "{:.0f}",
    cmap: str = "Blues",
    vmax: float | None = None,
) -> str:
    """An annotated heat map as a PNG (confusion matrices, continual accuracy matrices)."""
    figure, axis = plt.subplots(figsize=(1.2 + 1.1 * len(column_labels), 0.9 + 0.55 * len(row_labels)))
    draw_matrix(axis, matrix, row_labels, column_labels, fmt=fmt, cmap=cmap, vmax=vmax)
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    return _png(figure)


def method_bars(rows: list[dict[str, Any]], metrics: list[str], title: str) -> str:
    """Grouped bars of continual-learning metrics per method (mean over seeds, error bar = SD)."""
    figure, axis = plt.subplots(figsize=(7.5, 3.2))
    width = 0.8 / max(len(rows), 1)
    for index, row in enumerate(rows):
        xs = np.arange(len(metrics)) + (index - (len(rows) - 1) / 2) * width
        means = [row["mean"].get(m) if row["mean"].get(m) is not None else np.nan for m in metrics]
        sds = [row["sd"].get(m) or 0.0 for m in metrics]
        axis.bar(xs, means, width=width, yerr=sds, label=f"{row['method']} (seeds: {row['seeds']})",
                 error_kw={"elinewidth": 0.8, "capsize": 2})
    axis.set_xticks(range(len(metrics)), metrics)
    axis.axhline(0, color="black", linewidth=0.6)
    axis.set_title(title)
    axis.legend(fontsize=7)
    axis.grid(axis="y", alpha=0.3)
    return _png(figure)


def ratio_sweeps(sweeps: dict[str, dict[str, Any]], title: str) -> str:
    """SAC's ratio chosen per task (``sac.ratio: auto``): for each task, the validation score (left axis)
    and general retention (right axis, with the criterion's floor) against r, the chosen r marked."""
    figure, axes = plt.subplots(1, len(sweeps), figsize=(3.6 * len(sweeps), 3.0), squeeze=False)
    for axis, (task, sweep) in zip(axes[0], sweeps.items(), strict=True):
        rows = sweep["results"]
        ratios = [row["ratio"] for row in rows]
        loss = sweep.get("metric") == "loss"
        scores = [-row["validation"] if loss else row["validation"] for row in rows]
        axis.plot(ratios, scores, marker="o", color="#3182bd")
        axis.set_ylabel("validation loss" if loss else "validation accuracy (%)", color="#3182bd", fontsize=8)
        axis.set_xlabel("SAC ratio r", fontsize=8)
        other = axis.twinx()
        other.plot(ratios, [row["retention"] for row in rows], marker="s", color="#e6550d")
        if sweep.get("criterion") == "floor":
            other.axhline(sweep["retention_floor"], color="#e6550d", linestyle=":", linewidth=0.8)
        other.set_ylabel("general retention", color="#e6550d", fontsize=8)
        axis.axvline(sweep["chosen"], color="black", linestyle="--", linewidth=0.8)
        axis.set_title(f"{task}: r = {sweep['chosen']:g}", fontsize=9)
        axis.tick_params(labelsize=7)
        other.tick_params(labelsize=7)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _png(figure)


def thumbnail(image: dict[str, Any] | None, side: int = 128) -> str | None:
    """A PNG thumbnail from pixels only, or None when the image cannot be read (never an error).

    Only images inside the root the items file names: the items file may come from elsewhere, and a
    report must not become a way to embed an arbitrary local file.
    """
    if not image or not image.get("path") or not image.get("root"):
        return None
    try:
        path = resolve_image_path(image["path"], image.get("root"))
        picture = load_image(path)
    except (MedvlmError, OSError, ImportError) as exc:  # a missing image must not stop a report
        log.debug("no thumbnail: %s", exc)
        return None
    picture.thumbnail((side, side), Image.BICUBIC)
    if max(picture.size) < side // 2:  # tiny synthetic images: enlarge so they can be seen
        scale = side // max(picture.size)
        picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    clean = Image.frombytes("RGB", picture.size, picture.convert("RGB").tobytes())
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_continual_methods(result: dict[str, Any], path: str | Path) -> Path:
    """The continual benchmark's figure (``bench/continual_forgetting.py``): every method's mean accuracy
    matrix, and Last / BWT / general retention (mean ± std) per method side by side."""
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
