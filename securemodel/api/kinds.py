"""What defines one custom resource kind: names, schema and how ``kubectl get`` shows it."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from securemodel.api.schema import Schema

GROUP = "securemodel.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
# `kubectl get securemodel-all` lists the three kinds. Not `securemodel`: kubectl resolves a
# category before a kind's singular name, so `kubectl get securemodel <name>` would fail.
CATEGORY = "securemodel-all"
# kubectl prints a number column with every digit it has (1.9999938109030821), and a printer
# column cannot format it. So a number column on status shows a string the operator writes
# under status.display (Kind.display), with this many decimals.
DISPLAY_DECIMALS: Mapping[str, int] = {
    "epsilonSpent": 2,
    "epsilonCommitted": 2,
    "epsilonReserved": 2,
    "epsilonAvailable": 2,
    "compressedAccuracy": 3,
    "accuracy": 3,
}


@dataclass(frozen=True)
class DisplayField:
    """``status.display.<key>``: the number at ``status.<source>`` as text with ``decimals`` decimals."""

    key: str
    source: tuple[str, ...]
    decimals: int
    description: str


@dataclass(frozen=True)
class Kind:
    """A namespaced custom resource kind of the ``securemodel.io`` group."""

    kind: str
    plural: str
    short_name: str
    description: str
    spec: Schema
    status: Schema
    printer_columns: tuple[Schema, ...]
    # Limits on metadata.name, where the name goes into the names of child objects.
    name_pattern: str | None = None
    name_max_length: int = 253

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def display_fields(self) -> tuple[DisplayField, ...]:
        """One per printer column of type number on status, keyed by the field's name."""
        fields = tuple(
            DisplayField(
                key=path[-1],
                source=path,
                decimals=DISPLAY_DECIMALS[path[-1]],
                description=f"status.{'.'.join(path)} with {DISPLAY_DECIMALS[path[-1]]} decimals, for kubectl get.",
            )
            for col in self.printer_columns
            if col["type"] == "number" and col["jsonPath"].startswith(".status.")
            for path in [tuple(col["jsonPath"].removeprefix(".status.").split("."))]
        )
        keys = [f.key for f in fields]
        assert len(keys) == len(set(keys)), f"{self.kind}: two display fields named alike in {keys}"
        return fields

    def display(self, status: Mapping[str, Any]) -> dict[str, str]:
        """``status.display`` for ``status``: each number a status column shows, as fixed-point text."""
        out: dict[str, str] = {}
        for field in self.display_fields:
            value: Any = status
            for part in field.source:
                value = value.get(part) if isinstance(value, Mapping) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[field.key] = f"{value:.{field.decimals}f}"
        return out


def column(name: str, json_path: str, kind: str = "string", description: str = "", priority: int = 0) -> Schema:
    """One ``additionalPrinterColumns`` entry."""
    out: Schema = {"name": name, "type": kind, "jsonPath": json_path}
    if description:
        out["description"] = description
    if priority:
        out["priority"] = priority
    return out


READY_COLUMN = column("Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition status")
AGE_COLUMN = column("Age", ".metadata.creationTimestamp", "date")
