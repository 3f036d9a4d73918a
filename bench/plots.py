"""Grouped bar charts for the benchmarks' figures in ``docs/img/`` (matplotlib, Agg backend, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

IMG_DIR = Path(__file__).resolve().parent.parent / "docs" / "img"


@dataclass(frozen=True)
class Panel:
    """One grouped bar chart: a bar per series in every category, each bar labelled with its value."""

    title: str
    ylabel: str
    categories: Sequence[str]
    series: Mapping[str, Sequence[float]]
    value_format: str = "{:.2f}"
    reference: float | None = None  # a dashed horizontal line at this value (e.g. ratio 1)
    reference_label: str = "_nolegend_"


def bar_charts(path: Path, title: str, panels: Sequence[Panel]) -> Path:
    """Draw ``panels`` side by side under ``title`` and save them to ``path`` as PNG.

    A series keeps its colour across panels (colours are given by label, in order of appearance).
    """
    labels = list(dict.fromkeys(label for panel in panels for label in panel.series))
    colors = {label: f"C{i}" for i, label in enumerate(labels)}
    figure = Figure(figsize=(5.2 * len(panels), 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _draw(axes, panel, colors)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _draw(axes: Axes, panel: Panel, colors: Mapping[str, str]) -> None:
    positions = np.arange(len(panel.categories))
    width = 0.8 / len(panel.series)
    for i, (label, values) in enumerate(panel.series.items()):
        offset = (i - (len(panel.series) - 1) / 2) * width
        bars = axes.bar(positions + offset, values, width, label=label, color=colors[label])
        axes.bar_label(bars, labels=[panel.value_format.format(v) for v in values], fontsize=7, padding=1)
    if panel.reference is not None:
        axes.axhline(panel.reference, color="black", linestyle="--", linewidth=0.8, label=panel.reference_label)
    axes.axhline(0, color="black", linewidth=0.5)
    axes.set_xticks(positions, panel.categories)
    axes.set_title(panel.title, fontsize=10)
    axes.set_ylabel(panel.ylabel)
    low, high = axes.get_ylim()
    headroom = 0.1 * (high - low)  # room for the value labels; a bar chart of positive values stays on 0
    axes.set_ylim(low - headroom if low < 0 else low, high + headroom)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False)
