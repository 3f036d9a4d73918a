"""Where training starts and what it trains: starting weights, frozen parameters, LoRA adapters.

Starting weights (:func:`read_init`, then :func:`load_init`) come from an encrypted fp32 model
artifact, authenticated against the binding the operator expects (a SecureModel's trained
artifact, a FederatedRound's global model), or from a plain PUBLIC ``state_dict`` file read
with ``torch.load(weights_only=True)`` (no code runs on load). The built model must match them
exactly: same keys, shapes (and for an artifact the same model spec, input shape, class count
and input map); the first difference is the error.

Frozen parameters (:func:`freeze`) get ``requires_grad=False``. DP-SGD
(:mod:`securemodel.workers.dpsgd`) clips, noises and updates only parameters that require a
gradient, in both clipping modes, so a frozen parameter is never touched and each example's
gradient norm is taken over the trained parameters only.

LoRA (:func:`add_lora`) injects PEFT adapters into named ``nn.Linear`` modules: their base
weight and bias are frozen, the adapters ``lora_A``/``lora_B`` (plain Linear layers) train
with book-keeping clipping. Opacus' hooks are not used with LoRA: with PEFT ≥ 0.14 they can
leave adapters silently untrained (opacus#820). :func:`merge_lora` folds the adapters into
the base weights and removes them, so the artifact has the plain architecture's keys.

Privacy: the starting weights are an input like the architecture; DP-SGD's guarantee for the
new training data is unchanged (whatever produced the weights was accounted where it ran).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from securemodel.crypto.artifacts import file_digest, read_artifact, read_data_key
from securemodel.data.loading import Standardization
from securemodel.models import ARTIFACT_KIND, ModelSpec, load_record


class InitModelError(ValueError):
    """The starting weights cannot be read, or do not fit the model being trained."""


class FreezeError(ValueError):
    """A ``--freeze`` prefix names no parameter, or nothing would be left to train."""


class LoraError(ValueError):
    """The LoRA settings do not fit the model."""


@dataclass(frozen=True)
class InitWeights:
    """Starting weights as read, and where they came from (for the result)."""

    state: dict[str, torch.Tensor]
    source: dict[str, Any]  # {"kind": "artifact" | "file", "digest": ..., ("binding": {...})}
    spec: ModelSpec | None = None  # the artifact's model: compared with the one being trained
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    standardization: Standardization | None = None


@dataclass(frozen=True)
class LoraSettings:
    """``--lora-rank``, ``--lora-alpha``, ``--lora-targets``."""

    rank: int
    alpha: float
    targets: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        """The result's ``lora`` field."""
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets), "merged": True}


def read_artifact_init(path: Path, key_file: Path, binding: Mapping[str, str], digest: str | None) -> InitWeights:
    """An fp32 model artifact written for exactly ``binding`` (kind ``model``) under the key in ``key_file``."""
    payload = read_artifact(path, read_data_key(key_file), kind=ARTIFACT_KIND, binding=binding, digest=digest)
    record = load_record(payload)
    if record.encoding != "fp32":
        raise InitModelError(f"{path}: a {record.encoding} artifact cannot start training; use the trained (fp32) one")
    state = {name: torch.from_numpy(np.array(array)) for name, array in record.state.items()}
    return InitWeights(
        state,
        {"kind": "artifact", "digest": file_digest(path.read_bytes()), "binding": dict(binding)},
        record.spec,
        record.input_shape,
        record.num_classes,
        record.standardization,
    )


def read_file_init(path: Path) -> InitWeights:
    """A plain ``state_dict`` (names to floating tensors) saved with ``torch.save``; nothing in it is executed."""
    blob = path.read_bytes()
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for files it refuses
        raise InitModelError(f"{path}: not a state_dict of tensors: {type(err).__name__}: {err}") from err
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) and v.is_floating_point() for k, v in state.items()
    ):
        raise InitModelError(f"{path}: not a state_dict of tensors: expected a mapping of names to floating tensors")
    return InitWeights(dict(state), {"kind": "file", "digest": file_digest(blob)})


def load_init(
    model: nn.Module,
    init: InitWeights,
    spec: ModelSpec,
    input_shape: tuple[int, ...],
    num_classes: int,
    standardization: Standardization | None,
) -> None:
    """Copy ``init`` into ``model``; raises :class:`InitModelError` naming the first difference."""
    if init.spec is not None and init.spec != spec:
        raise InitModelError(
            f"architecture mismatch: the init model is {init.spec.label} with params {init.spec.params}, "
            f"the model {spec.label} with params {spec.params}"
        )
    shapes = (tuple(input_shape), num_classes)
    if init.input_shape is not None and (tuple(init.input_shape), init.num_classes) != shapes:
        raise InitModelError(
            f"architecture mismatch: the init model takes inputs {list(init.input_shape)} and {init.num_classes} "
            f"classes, the model {list(input_shape)} and {num_classes} classes"
        )
    if init.spec is not None and not _same_map(init.standardization, standardization):
        raise InitModelError(
            "architecture mismatch: the init model standardizes its inputs differently from the training data"
        )
    own = model.state_dict()
    for name, tensor in own.items():
        if name not in init.state:
            raise InitModelError(f"architecture mismatch: parameter {name!r} is missing from the init model")
        if tuple(init.state[name].shape) != tuple(tensor.shape):
            raise InitModelError(
                f"architecture mismatch: parameter {name!r} has shape {list(init.state[name].shape)} in the init "
                f"model, {list(tensor.shape)} in the model"
            )
    extra = [name for name in init.state if name not in own]
    if extra:
        raise InitModelError(f"architecture mismatch: the init model has {extra[0]!r}, which the model does not")
    model.load_state_dict({name: t.to(own[name].dtype) for name, t in init.state.items()}, strict=True)


def _same_map(a: Standardization | None, b: Standardization | None) -> bool:
    if a is None or b is None:
        return a is b
    return all(
        np.array_equal(np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32))
        for x, y in ((a.mean, b.mean), (a.scale, b.scale))
    )


def freeze(model: nn.Module, prefixes: Sequence[str]) -> None:
    """Set ``requires_grad=False`` on every parameter named ``p`` or ``p.…`` for a prefix ``p``.

    Raises :class:`FreezeError` for a prefix that matches no parameter, or if nothing is left to train.
    """
    named = dict(model.named_parameters())
    for prefix in prefixes:
        matched = [name for name in named if name == prefix or name.startswith(prefix + ".")]
        if not matched:
            raise FreezeError(
                f"unknown prefix {prefix!r}: no parameter of the model is named {prefix!r} "
                f"or starts with {prefix + '.'!r}"
            )
        for name in matched:
            named[name].requires_grad_(False)
    if not any(p.requires_grad for p in named.values()):
        raise FreezeError("every parameter is frozen: nothing to train")


def add_lora(model: nn.Module, settings: LoraSettings) -> None:
    """Inject LoRA adapters (PEFT, dropout 0, no bias) into ``settings.targets``, in place.

    The targets' base weights and biases are frozen; every other parameter keeps its
    ``requires_grad`` (so call :func:`freeze` first). Raises :class:`LoraError` for a target that
    is not a Linear module of the model.
    """
    from peft import LoraConfig, inject_adapter_in_model

    modules = dict(model.named_modules())
    for target in settings.targets:
        if target not in modules:
            raise LoraError(f"unknown module {target!r}")
        if type(modules[target]) is not nn.Linear:
            raise LoraError(f"{target} ({type(modules[target]).__name__}) is not a Linear layer")
    trainable = {
        id(p)
        for name, p in model.named_parameters()
        if p.requires_grad and not any(name.startswith(target + ".") for target in settings.targets)
    }
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        target_modules=list(settings.targets),
        lora_dropout=0.0,
        bias="none",
    )
    inject_adapter_in_model(config, model)  # freezes everything but the adapters
    for p in model.parameters():
        if id(p) in trainable:
            p.requires_grad_(True)


def merge_lora(model: nn.Module) -> None:
    """Fold every LoRA adapter into its base layer and put the base layer back in its place."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            setattr(parent, child, module.get_base_layer())


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) numbers of scalar parameters."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen
