"""Tables on volumes: the declared ``spec.data.schema``, reading ``.csv`` / ``.parquet``, and the encoding.

``spec.data.schema`` declares the label column with its classes and the feature columns with
their types, so the operator knows the input width and the classes without reading data:

* ``numeric`` features carry public bounds ``[min, max]``: a value is clipped to them and mapped
  linearly onto ``[-1, 1]`` (one input);
* ``categorical`` features carry their declared categories: a value is one-hot encoded (one
  input per category).

**Guarantee.** The encoding is a fixed function of the schema: no statistic, vocabulary or
class count is learned from the rows, so changing one row changes that row's inputs only.

**Errors.** A cell that does not fit (missing, not a number, not a declared category or class)
raises :class:`SchemaError` naming the column and the row, counted from 1 at the first data row
(a CSV header is not a row); nothing is ever dropped, which would change N. Messages never quote
a cell's value: it could be an identifier, and errors reach logs, Events and status.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

# The file formats read as tables (an .npz holds ready-made arrays, see securemodel.data.loading).
TABLE_SUFFIXES = (".csv", ".parquet")


class SchemaError(ValueError):
    """A malformed schema, or a column or row of the data that does not fit it."""


def cell_text(value: object) -> str:
    """The text a cell compares as against declared categories and classes.

    Integers and integral floats print without a fraction (``3.0`` is ``"3"``), dates in ISO
    8601, booleans as ``true`` / ``false``; strings are taken as they are.
    """
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
        return str(int(value))
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def cell_number(value: object, column: str, row: int) -> float:
    """A cell as a finite float; raises :class:`SchemaError` naming ``column`` and ``row``."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        raise SchemaError(f"column {column!r}, row {row}: missing value")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise SchemaError(f"column {column!r}, row {row}: not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise SchemaError(f"column {column!r}, row {row}: not a number")
    number = float(value)
    if not math.isfinite(number):
        raise SchemaError(f"column {column!r}, row {row}: not a finite number")
    return number


@dataclass(frozen=True)
class NumericFeature:
    """A number with public bounds: clipped to ``[low, high]``, then mapped onto ``[-1, 1]``."""

    column: str
    low: float
    high: float

    width = 1

    def encode(self, values: Sequence[object]) -> np.ndarray:
        """``(n, 1)`` float32 inputs of the cells ``values``."""
        numbers = np.array([cell_number(v, self.column, row) for row, v in enumerate(values, 1)], dtype=np.float64)
        scaled = 2.0 * (np.clip(numbers, self.low, self.high) - self.low) / (self.high - self.low) - 1.0
        return scaled.astype(np.float32).reshape(-1, 1)


@dataclass(frozen=True)
class CategoricalFeature:
    """A value among declared categories, one-hot encoded in the declared order."""

    column: str
    categories: tuple[str, ...]

    @property
    def width(self) -> int:
        """Inputs this feature takes: one per category."""
        return len(self.categories)

    def encode(self, values: Sequence[object]) -> np.ndarray:
        """``(n, len(categories))`` float32 one-hot inputs of the cells ``values``."""
        index = _indices(values, self.categories, self.column, "declared categories")
        return np.eye(len(self.categories), dtype=np.float32)[index]


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True)
class Label:
    """The label: its declared classes (class ``i`` is ``classes[i]``) and, for tables, its column."""

    classes: tuple[str, ...]
    column: str | None = None

    def encode(self, values: Sequence[object]) -> np.ndarray:
        """``(n,)`` int64 class indices of the cells ``values``."""
        return _indices(values, self.classes, self.column or "label", "declared classes")


def _indices(values: Sequence[object], names: tuple[str, ...], column: str, what: str) -> np.ndarray:
    position = {name: i for i, name in enumerate(names)}
    out = np.empty(len(values), dtype=np.int64)
    for row, value in enumerate(values, 1):
        if value is None:
            raise SchemaError(f"column {column!r}, row {row}: missing value")
        try:
            out[row - 1] = position[cell_text(value)]
        except KeyError:
            raise SchemaError(f"column {column!r}, row {row}: not one of the {len(names)} {what}") from None
    return out


@dataclass(frozen=True)
class TableSchema:
    """``spec.data.schema``: the label and the features, in input order."""

    label: Label
    features: tuple[Feature, ...] = ()

    @property
    def input_width(self) -> int:
        """Length of one example's input vector."""
        return sum(feature.width for feature in self.features)

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """The feature columns, in input order."""
        return tuple(feature.column for feature in self.features)

    def encode(self, columns: Mapping[str, Sequence[object]]) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``(n, input_width)`` float32 and labels ``(n,)`` int64 of a (masked) table's columns."""
        if self.label.column is None:
            raise SchemaError("the schema's label names no column; a table needs one")
        return self.encode_features(columns), self.label.encode(columns[self.label.column])

    def encode_features(self, columns: Mapping[str, Sequence[object]]) -> np.ndarray:
        """Inputs ``(n, input_width)`` float32 of the feature columns (other columns are ignored)."""
        if not self.features:
            raise SchemaError("the schema declares no features; a table needs at least one")
        return np.concatenate([f.encode(columns[f.column]) for f in self.features], axis=1, dtype=np.float32)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> TableSchema:
        """Parse ``spec.data.schema`` (as the API server stores it); raises :class:`SchemaError`."""
        try:
            label_spec = spec["label"]
            label = Label(tuple(str(c) for c in label_spec["classes"]), label_spec.get("column"))
            features = tuple(_feature(f) for f in spec.get("features", ()))
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, SchemaError):
                raise
            raise SchemaError(f"malformed spec.data.schema: {type(err).__name__}: {err}") from err
        schema = cls(label, features)
        schema.check()
        return schema

    def to_spec(self) -> dict[str, Any]:
        """Inverse of :meth:`from_spec`."""
        label: dict[str, Any] = {"classes": list(self.label.classes)}
        if self.label.column is not None:
            label["column"] = self.label.column
        out: dict[str, Any] = {"label": label}
        if self.features:
            out["features"] = [_feature_spec(f) for f in self.features]
        return out

    def check(self) -> None:
        """What the CRD's rules also enforce, for callers that bypass the API server."""
        if len(self.label.classes) < 2 or len(set(self.label.classes)) != len(self.label.classes):
            raise SchemaError("the label needs at least 2 distinct classes")
        columns = [f.column for f in self.features]
        duplicates = sorted({c for c in columns if columns.count(c) > 1})
        if duplicates:
            raise SchemaError(f"feature column {duplicates[0]!r} is declared twice")
        if self.label.column is not None and self.label.column in columns:
            raise SchemaError(f"column {self.label.column!r} is both the label and a feature")
        for feature in self.features:
            if isinstance(feature, NumericFeature) and not feature.low < feature.high:
                raise SchemaError(f"feature {feature.column!r}: min must be smaller than max")
            if isinstance(feature, CategoricalFeature) and (
                not feature.categories or len(set(feature.categories)) != len(feature.categories)
            ):
                raise SchemaError(f"feature {feature.column!r}: categories must be distinct and not empty")


def _feature(spec: Mapping[str, Any]) -> Feature:
    kind = spec.get("type")
    if kind == "numeric":
        return NumericFeature(str(spec["name"]), float(spec["min"]), float(spec["max"]))
    if kind == "categorical":
        return CategoricalFeature(str(spec["name"]), tuple(str(c) for c in spec["categories"]))
    raise SchemaError(f"feature {spec.get('name')!r}: unknown type {kind!r}; numeric or categorical")


def _feature_spec(feature: Feature) -> dict[str, Any]:
    if isinstance(feature, NumericFeature):
        return {"name": feature.column, "type": "numeric", "min": feature.low, "max": feature.high}
    return {"name": feature.column, "type": "categorical", "categories": list(feature.categories)}


def read_table(path: Path, where: str) -> dict[str, list[object]]:
    """Every column of a ``.csv`` or ``.parquet`` file as Python values, in file order.

    A CSV is read with every column as text (so identifiers keep leading zeros; numbers are
    parsed where a feature needs them), an empty cell as a missing value, quoted cells may span
    lines. ``where`` names the source in errors. Raises :class:`SchemaError` for an unreadable
    file or a header that repeats a column name.
    """
    import pyarrow as pa  # imported here: only the worker image has pyarrow
    from pyarrow import csv, parquet

    try:
        if path.suffix == ".csv":
            parse = csv.ParseOptions(newlines_in_values=True)
            names = csv.open_csv(path, parse_options=parse).schema.names
            _no_duplicates(names, where)
            convert = csv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()), strings_can_be_null=True, null_values=[""]
            )
            table = csv.read_csv(path, parse_options=parse, convert_options=convert)
        elif path.suffix == ".parquet":
            table = parquet.read_table(path)
            _no_duplicates(table.column_names, where)
        else:
            raise SchemaError(f"{where}: a table must be a {' or '.join(TABLE_SUFFIXES)} file")
    except (OSError, pa.ArrowException) as err:
        # The reader's own message is left out: it may quote the cells of a malformed row.
        raise SchemaError(f"{where}: cannot read the table ({type(err).__name__}); is it a well-formed file?") from None
    return {name: table.column(name).to_pylist() for name in table.column_names}


def _no_duplicates(names: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SchemaError(f"{where}: column {name!r} appears twice in the header")
        seen.add(name)
