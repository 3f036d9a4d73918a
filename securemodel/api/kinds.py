"""What defines one custom resource kind: names, schema and how ``kubectl get`` shows it."""

from dataclasses import dataclass

from securemodel.api.schema import Schema

GROUP = "securemodel.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "securemodel"


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
