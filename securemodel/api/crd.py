"""Render a :class:`Kind` as an ``apiextensions.k8s.io/v1`` CustomResourceDefinition."""

from typing import Any

from securemodel.api.kinds import CATEGORY, GROUP, VERSION, Kind
from securemodel.api.schema import Schema, obj, string


def _metadata_schema(kind: Kind) -> Schema:
    """Object metadata, with the limits on ``metadata.name`` the kind's child objects need."""
    if kind.name_pattern is None:
        return {"type": "object"}
    name: Schema = {"type": "string", "maxLength": kind.name_max_length, "pattern": kind.name_pattern}
    return {"type": "object", "properties": {"name": name}}


# An object the operator has not reconciled yet reads back with this status (the API server's default),
# so that kstatus (Flux, Argo CD's gitops-engine) sees observedGeneration 0 < generation, i.e. "in
# progress", instead of judging an object without status Current the moment it is created.
UNOBSERVED_STATUS: Schema = {"observedGeneration": 0}


def _status_schema(kind: Kind) -> Schema:
    """The kind's status, with ``display`` holding the text its number columns show, defaulted to
    :data:`UNOBSERVED_STATUS`."""
    fields = kind.display_fields
    properties = dict(kind.status["properties"])
    if fields:
        properties["display"] = obj(
            "Numbers of the status as kubectl get shows them (written by the operator; the numbers themselves "
            "hold the exact values).",
            {f.key: string(f.description) for f in fields},
        )
    return {**kind.status, "properties": properties, "default": dict(UNOBSERVED_STATUS)}


def _printer_column(kind: Kind, column: Schema) -> Schema:
    """``column``, reading ``status.display`` instead where it shows a number of the status."""
    for field in kind.display_fields:
        if column["jsonPath"] == ".status." + ".".join(field.source):
            return {**column, "type": "string", "jsonPath": f".status.display.{field.key}"}
    return column


def crd(kind: Kind) -> dict[str, Any]:
    """The CustomResourceDefinition of ``kind``: one served, stored version with a status subresource."""
    root: Schema = {
        "type": "object",
        "description": kind.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": _metadata_schema(kind),
            "spec": kind.spec,
            "status": _status_schema(kind),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "securemodel"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short_name],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": root},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [_printer_column(kind, c) for c in kind.printer_columns],
                }
            ],
        },
    }
