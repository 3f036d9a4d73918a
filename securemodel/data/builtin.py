"""Public metadata of the built-in datasets: classes and feature bounds (pure, no data needed).

Everything here is copied from the datasets' published descriptions, the ``DESCR`` text that
scikit-learn ships with each of them (the "Summary Statistics" tables of min and max per
attribute, the class lists, and for ``digits`` "8x8 image of integer pixels in the range
0..16"), so the preprocessing built from it is fixed before any row is read: one example's
values never change how another example is encoded. ``tests/unit/data`` checks these tables
against the ``DESCR`` of the installed scikit-learn.
"""

from __future__ import annotations

from typing import Final, NamedTuple


class Bounds(NamedTuple):
    """Published minimum and maximum of each feature (one entry per feature, in column order)."""

    low: tuple[float, ...]
    high: tuple[float, ...]


def _bounds(*rows: tuple[float, float]) -> Bounds:
    return Bounds(tuple(low for low, _ in rows), tuple(high for _, high in rows))


# Number of classes of each built-in dataset (DESCR ":Attribute Information: ... class").
BUILTIN_CLASSES: Final[dict[str, int]] = {"breast_cancer": 2, "digits": 10, "iris": 3, "wine": 3}

# Per-feature published bounds. breast_cancer: DESCR "Summary Statistics" (mean, standard error,
# worst of ten measurements, the data's column order); iris and wine: their DESCR tables.
BUILTIN_BOUNDS: Final[dict[str, Bounds]] = {
    "breast_cancer": _bounds(
        (6.981, 28.11), (9.71, 39.28), (43.79, 188.5), (143.5, 2501.0), (0.053, 0.163),
        (0.019, 0.345), (0.0, 0.427), (0.0, 0.201), (0.106, 0.304), (0.05, 0.097),
        (0.112, 2.873), (0.36, 4.885), (0.757, 21.98), (6.802, 542.2), (0.002, 0.031),
        (0.002, 0.135), (0.0, 0.396), (0.0, 0.053), (0.008, 0.079), (0.001, 0.03),
        (7.93, 36.04), (12.02, 49.54), (50.41, 251.2), (185.2, 4254.0), (0.071, 0.223),
        (0.027, 1.058), (0.0, 1.252), (0.0, 0.291), (0.156, 0.664), (0.055, 0.208),
    ),  # fmt: skip
    "digits": _bounds(*[(0.0, 16.0)] * 64),
    "iris": _bounds((4.3, 7.9), (2.0, 4.4), (1.0, 6.9), (0.1, 2.5)),
    "wine": _bounds(
        (11.0, 14.8), (0.74, 5.80), (1.36, 3.23), (10.6, 30.0), (70.0, 162.0), (0.98, 3.88), (0.34, 5.08),
        (0.13, 0.66), (0.41, 3.58), (1.3, 13.0), (0.48, 1.71), (1.27, 4.00), (278.0, 1680.0),
    ),  # fmt: skip
}
