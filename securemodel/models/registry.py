"""Which model to build: a built-in architecture or a custom ``module:function`` entrypoint.

This mirrors ``SecureModel.spec.model``: exactly one of ``architecture`` (a key of
:data:`securemodel.models.architectures.BUILTIN`) and ``entrypoint`` (``pkg.mod:build``, a
callable ``build(input_shape, num_classes, **params) -> torch.nn.Module`` importable in the
worker image) is set; ``params`` are the builder's keyword arguments.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from securemodel.models.architectures import BUILTIN

Builder = Callable[..., nn.Module]


class ModelBuildError(ValueError):
    """The model cannot be built: unknown architecture, an entrypoint that does not import, bad params."""


@dataclass(frozen=True)
class ModelSpec:
    """``spec.model`` of a SecureModel: what to build and with which keyword arguments."""

    architecture: str | None = None
    entrypoint: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.architecture is None) == (self.entrypoint is None):
            raise ModelBuildError("exactly one of architecture and entrypoint must be set")

    @property
    def label(self) -> str:
        """How this model is named in messages: ``mlp`` or ``entrypoint pkg.mod:build``."""
        return self.architecture if self.architecture is not None else f"entrypoint {self.entrypoint}"

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object (the fields that are set)."""
        key = "architecture" if self.architecture is not None else "entrypoint"
        return {key: self.architecture or self.entrypoint, "params": self.params}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ModelSpec:
        """Inverse of :meth:`to_json`."""
        return cls(value.get("architecture"), value.get("entrypoint"), dict(value.get("params", {})))


def resolve_builder(spec: ModelSpec) -> Builder:
    """Find the builder callable; imports the entrypoint's module. Raises :class:`ModelBuildError`."""
    if spec.architecture is not None:
        try:
            return BUILTIN[spec.architecture]
        except KeyError:
            raise ModelBuildError(
                f"unknown architecture {spec.architecture!r}; built-ins are {sorted(BUILTIN)} (or set an entrypoint)"
            ) from None
    assert spec.entrypoint is not None
    module_name, sep, attribute = spec.entrypoint.partition(":")
    if not (sep and module_name and attribute):
        raise ModelBuildError(f"entrypoint {spec.entrypoint!r} is not of the form pkg.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # any failure of a user's module to import is reported the same way
        raise ModelBuildError(
            f"entrypoint {spec.entrypoint!r}: cannot import module {module_name!r} "
            f"({type(err).__name__}: {err}); is it installed in the worker image?"
        ) from err
    builder = getattr(module, attribute, None)
    if builder is None:
        raise ModelBuildError(f"entrypoint {spec.entrypoint!r}: module {module_name!r} has no attribute {attribute!r}")
    if not callable(builder):
        raise ModelBuildError(f"entrypoint {spec.entrypoint!r}: {attribute!r} is not callable")
    return builder


def build_model(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build the model for samples of ``input_shape`` and ``num_classes`` classes, in float32."""
    builder = resolve_builder(spec)
    try:
        model = builder(tuple(input_shape), num_classes, **spec.params)
    except (TypeError, ValueError) as err:
        raise ModelBuildError(f"{spec.label}: cannot build with params {spec.params}: {err}") from err
    if not isinstance(model, nn.Module):
        raise ModelBuildError(f"{spec.label}: the builder returned {type(model).__name__}, not a torch.nn.Module")
    return model.float()
