"""The input encoding of a table model, shared by training and by inference requests given by column name.

A :class:`TableEncoding` is the schema's features and label classes plus the masking's
generalizations of the feature columns: everything needed to turn raw cells into the model's
input vector, and nothing secret (no pseudonymization key, no data). Its JSON form
(:meth:`TableEncoding.to_json`) belongs in the model payload so the served model can take
Open Inference Protocol inputs by name, one tensor per column as KServe's tabular examples send
them, and apply exactly the masking and encoding its training saw (:meth:`encode_request`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from securemodel.data.masking import DateGeneralization, Generalization, Masking, generalization_from_spec
from securemodel.data.tables import CategoricalFeature, SchemaError, TableSchema


class RequestError(ValueError):
    """Inputs by name that do not fit the encoding: a missing or unexpected column, a bad cell."""


@dataclass(frozen=True)
class TableEncoding:
    """Schema features and classes, and the generalizations applied to feature columns first."""

    schema: TableSchema
    generalize: Mapping[str, Generalization] = field(default_factory=dict)

    @classmethod
    def of(cls, schema: TableSchema, masking: Masking) -> TableEncoding:
        """The encoding a model trained on ``schema`` under ``masking`` takes its inputs with."""
        masking.check(schema)
        features = set(schema.feature_columns)
        return cls(schema, {c: g for c, g in masking.generalize.items() if c in features})

    @property
    def columns(self) -> tuple[str, ...]:
        """The input columns a request must give, in input order."""
        return self.schema.feature_columns

    @property
    def classes(self) -> tuple[str, ...]:
        """Names of the classes, in output order."""
        return self.schema.label.classes

    def inputs_metadata(self) -> list[dict[str, Any]]:
        """OIP ``inputs`` metadata by name: BYTES for categorical and date columns, FP32 for numbers."""
        out = []
        for feature in self.schema.features:
            date = isinstance(self.generalize.get(feature.column), DateGeneralization)
            textual = isinstance(feature, CategoricalFeature) or date
            out.append({"name": feature.column, "datatype": "BYTES" if textual else "FP32", "shape": [-1]})
        return out

    def check_names(self, names: Collection[str]) -> None:
        """Raise :class:`RequestError` naming the first unexpected column of ``names``, else the first missing one."""
        unexpected = sorted(set(names) - set(self.columns))
        if unexpected:
            raise RequestError(f"unexpected input {unexpected[0]!r}; this model takes {list(self.columns)}")
        missing = [c for c in self.columns if c not in names]
        if missing:
            raise RequestError(f"missing input {missing[0]!r}; this model takes {list(self.columns)}")

    def encode_request(self, inputs: Mapping[str, Sequence[object]]) -> np.ndarray:
        """The model input ``(batch, input_width)`` float32 of one value per row for each input column.

        Raises :class:`RequestError` naming a missing or unexpected column, columns of unequal
        length, or the column and row of a cell that does not fit (the serving layer answers 400).
        """
        self.check_names(inputs)
        lengths = {len(inputs[c]) for c in self.columns}
        if len(lengths) != 1:
            raise RequestError(f"inputs must all hold the same number of rows; got lengths {sorted(lengths)}")
        try:
            return self.schema.encode_features(self.generalized(inputs))
        except SchemaError as err:
            raise RequestError(str(err)) from None

    def generalized(self, columns: Mapping[str, Sequence[object]]) -> dict[str, Sequence[object]]:
        """``columns`` with the generalizations applied (what :meth:`encode_request` encodes)."""
        return {c: self.generalize[c].apply(v, c) if c in self.generalize else v for c, v in columns.items()}

    def to_json(self) -> dict[str, Any]:
        """JSON form for the model payload."""
        return {
            "schema": self.schema.to_spec(),
            "generalize": [{"column": c, **g.to_spec()} for c, g in self.generalize.items()],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> TableEncoding:
        """Inverse of :meth:`to_json`; raises :class:`SchemaError` for a malformed value."""
        try:
            schema = TableSchema.from_spec(value["schema"])
            generalize = {str(r["column"]): generalization_from_spec(r) for r in value.get("generalize", ())}
        except (KeyError, TypeError) as err:
            raise SchemaError(f"malformed table encoding: {type(err).__name__}: {err}") from None
        return cls(schema, generalize)
