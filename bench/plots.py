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
    """Draw ``panels`` side by side under ``title`` and save them to ``path`` as PNG."""
    figure = Figure(figsize=(5.2 * len(panels), 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    for axes, panel in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        _draw(axes, panel)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    return path


def _draw(axes: Axes, panel: Panel) -> None:
    positions = np.arange(len(panel.categories))
    width = 0.8 / len(panel.series)
    for i, (label, values) in enumerate(panel.series.items()):
        bars = axes.bar(positions + (i - (len(panel.series) - 1) / 2) * width, values, width, label=label)
        axes.bar_label(bars, labels=[panel.value_format.format(v) for v in values], fontsize=7, padding=1)
    if panel.reference is not None:
        axes.axhline(panel.reference, color="black", linestyle="--", linewidth=0.8, label=panel.reference_label)
    axes.axhline(0, color="black", linewidth=0.5)
    axes.set_xticks(positions, panel.categories)
    axes.set_title(panel.title, fontsize=10)
    axes.set_ylabel(panel.ylabel)
    axes.margins(y=0.12)
    axes.legend(fontsize=8)
