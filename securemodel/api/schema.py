"""Builders for structural OpenAPI v3 schemas, and the fragments the three kinds share.

Each builder returns a plain dict in the shape the API server expects inside a
CustomResourceDefinition, so the kinds read like the schema they produce.
"""

from collections.abc import Iterable, Mapping
from typing import Any

Schema = dict[str, Any]

# DNS-1123 label / subdomain, as Kubernetes validates object and namespace names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# DNS-1035 label: what a Service name must be (starts with a letter).
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# A Go duration made of whole hours, minutes and seconds, e.g. 720h, 10m, 1h30m.
DURATION = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
# A non-negative resource quantity such as 500m, 1, 2Gi or 1e3.
QUANTITY = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# builtin://<dataset>[?shard=i&of=n] or pvc://<claim>/<path>.
DATA_SOURCE = (
    r"^(builtin://[a-z][a-z0-9_]*(\?shard=(0|[1-9][0-9]*)&of=[1-9][0-9]*)?"
    r"|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[^\s?#]+)$"
)


def rule(
    expression: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: str | None = None,
) -> Schema:
    """One ``x-kubernetes-validations`` entry (a CEL rule and the error it reports)."""
    out: Schema = {"rule": expression, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def _common(schema: Schema, description: str, default: Any, rules: Iterable[Schema]) -> Schema:
    """Add what every property may carry; the description goes first, for readable YAML."""
    out: Schema = {"description": description, **schema}
    if default is not None:
        out["default"] = default
    rules = list(rules)
    if rules:
        out["x-kubernetes-validations"] = rules
    return out


def string(
    description: str,
    *,
    pattern: str | None = None,
    enum: Iterable[str] | None = None,
    max_length: int | None = None,
    min_length: int | None = None,
    default: str | None = None,
    fmt: str | None = None,
    rules: Iterable[Schema] = (),
) -> Schema:
    """A string property; give strings a max_length where a CEL rule reads them."""
    out: Schema = {"type": "string"}
    if enum is not None:
        out["enum"] = [str(value) for value in enum]
    if pattern:
        out["pattern"] = pattern
    if min_length is not None:
        out["minLength"] = min_length
    if max_length is not None:
        out["maxLength"] = max_length
    if fmt:
        out["format"] = fmt
    return _common(out, description, None if default is None else str(default), rules)


def number(
    description: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    default: float | None = None,
) -> Schema:
    """A floating-point property with optional (exclusive) bounds."""
    out: Schema = {"type": "number"}
    if minimum is not None:
        out["minimum"] = minimum
        if exclusive_minimum:
            out["exclusiveMinimum"] = True
    if maximum is not None:
        out["maximum"] = maximum
        if exclusive_maximum:
            out["exclusiveMaximum"] = True
    return _common(out, description, default, ())


def integer(
    description: str,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    default: int | None = None,
    fmt: str | None = None,
) -> Schema:
    """An integer property with optional inclusive bounds."""
    out: Schema = {"type": "integer"}
    if fmt:
        out["format"] = fmt
    if minimum is not None:
        out["minimum"] = minimum
    if maximum is not None:
        out["maximum"] = maximum
    return _common(out, description, default, ())


def boolean(description: str, *, default: bool | None = None) -> Schema:
    """A boolean property."""
    return _common({"type": "boolean"}, description, default, ())


def quantity(description: str, *, default: str | None = None) -> Schema:
    """A resource quantity (``500m``, ``2Gi``), given as a string or an integer."""
    out: Schema = {
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "x-kubernetes-int-or-string": True,
        "pattern": QUANTITY,
    }
    return _common(out, description, default, ())


def obj(
    description: str,
    properties: Mapping[str, Schema],
    *,
    required: Iterable[str] = (),
    default: Mapping[str, Any] | None = None,
    rules: Iterable[Schema] = (),
) -> Schema:
    """An object with known properties (unknown ones are pruned by the API server)."""
    out: Schema = {"type": "object", "properties": dict(properties)}
    required = list(required)
    if required:
        out["required"] = required
    return _common(out, description, None if default is None else dict(default), rules)


def free_form(description: str) -> Schema:
    """An object whose content the API server keeps as given (builder parameters)."""
    return {"description": description, "type": "object", "x-kubernetes-preserve-unknown-fields": True}


def array(
    description: str,
    items: Schema,
    *,
    max_items: int | None = None,
    min_items: int | None = None,
    list_type: str | None = None,
    map_keys: Iterable[str] = (),
    rules: Iterable[Schema] = (),
) -> Schema:
    """A list; ``list_type`` ``set`` or ``map`` makes the API server reject duplicates."""
    out: Schema = {"type": "array", "items": items}
    if min_items is not None:
        out["minItems"] = min_items
    if max_items is not None:
        out["maxItems"] = max_items
    if list_type:
        out["x-kubernetes-list-type"] = list_type
    keys = list(map_keys)
    if keys:
        out["x-kubernetes-list-map-keys"] = keys
    return _common(out, description, None, rules)


def duration(description: str, *, default: str, at_least: str, at_most: str) -> Schema:
    """A duration such as ``720h`` or ``10m``, bounded by CEL on the parsed value."""
    return string(
        description,
        pattern=DURATION,
        min_length=2,
        max_length=32,
        default=default,
        rules=[
            rule(
                # Only parse what the pattern accepts, so a malformed value reports one error.
                f"!self.matches('{DURATION}')"
                f" || (duration(self) >= duration('{at_least}') && duration(self) <= duration('{at_most}'))",
                f"must be between {at_least} and {at_most}",
            )
        ],
    )


def name_ref(description: str, *, rules: Iterable[Schema] = ()) -> Schema:
    """The name of another object (a DNS-1123 subdomain)."""
    return string(description, pattern=DNS_SUBDOMAIN, min_length=1, max_length=253, rules=rules)


def data_source(description: str) -> Schema:
    """A dataset location, ``builtin://<name>[?shard=i&of=n]`` or ``pvc://<claim>/<path>``."""
    return string(
        description,
        pattern=DATA_SOURCE,
        max_length=512,
        rules=[
            rule(
                "!self.matches('[?]shard=[0-9]+&of=[0-9]+$')"
                " || int(self.find('shard=[0-9]+').substring(6)) < int(self.find('of=[0-9]+').substring(3))",
                "shard must be smaller than of (shards are numbered 0 to of-1)",
            ),
            rule(
                "!self.startsWith('pvc://') || !self.matches('/[.][.]?(/|$)')",
                "the path inside the claim may not contain '.' or '..' segments",
            ),
        ],
    )


def epsilon(description: str) -> Schema:
    """A privacy loss ε (strictly positive)."""
    return number(description, minimum=0, exclusive_minimum=True)


def delta(description: str, *, default: float | None = None) -> Schema:
    """A failure probability δ in the open interval (0, 1)."""
    return number(description, minimum=0, maximum=1, exclusive_minimum=True, exclusive_maximum=True, default=default)


def conditions() -> Schema:
    """The standard list of status conditions (shape of ``metav1.Condition``)."""
    condition = obj(
        "An observation of one aspect of the object's state.",
        {
            "type": string("Condition type in CamelCase, e.g. Ready.", max_length=316),
            "status": string("True, False or Unknown.", enum=["True", "False", "Unknown"]),
            "reason": string(
                "Machine-readable CamelCase reason for the last transition.",
                max_length=1024,
                pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            ),
            "message": string("Human-readable detail of the last transition.", max_length=32768),
            "lastTransitionTime": string("When status last changed.", fmt="date-time"),
            "observedGeneration": integer(
                "metadata.generation the condition was computed from.", minimum=0, fmt="int64"
            ),
        },
        required=["type", "status", "reason", "message", "lastTransitionTime"],
    )
    return array(
        "Conditions of the object (Ready and kind-specific ones).",
        condition,
        list_type="map",
        map_keys=["type"],
    )


def observed_generation() -> Schema:
    """``status.observedGeneration``: the generation the status describes."""
    return integer("metadata.generation the operator last reconciled.", minimum=0, fmt="int64")


def phase(description: str, phases: Iterable[str]) -> Schema:
    """``status.phase``: a one-word summary of where the object is in its lifecycle."""
    return string(description, enum=list(phases))
