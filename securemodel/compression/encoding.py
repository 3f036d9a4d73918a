"""The compact stored form of a pruned and quantized state: bitmask + int8 values + fp32 scales.

Each tensor of a state is stored under one of these codes (``layout[name] = [code, shape]``);
the arrays are named after the tensor, with ``#m`` for the mask and ``#s`` for the scales:

======  ==============================================================  ===================
code    arrays                                                          bits per weight
======  ==============================================================  ===================
``f32`` ``name``: dense float32                                          32
``i8``  ``name``: dense int8; ``name#s``: float32 scale per channel      8
``s32`` ``name#m``: bitmask of kept entries (numpy ``packbits``, C      1 + 32 × density
        order, big-endian bits); ``name``: float32 kept values in C order
``s8``  ``name#m`` as above; ``name``: int8 kept values; ``name#s``:      1 + 8 × density
        float32 scale per output channel
``raw`` ``name``: a non-float tensor (e.g. an integer buffer) as it is    its own
======  ==============================================================  ===================

Prunable tensors (see :mod:`securemodel.compression.pruning`) are pruned to the target
sparsity (over all of them together, layer-adaptive), then (with ``quantization="int8"``)
quantized per output channel (see :mod:`securemodel.compression.quantization`); a mask is stored
only when something was pruned.
Other floating tensors (biases, norm parameters) stay dense float32. At sparsity 0.5 with
int8 a weight costs 5 bits instead of 32: real bytes, not a masked dense float tensor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from securemodel.compression.pruning import prune_masks
from securemodel.compression.quantization import dequantize_per_channel, quantize_per_channel

Quantization = Literal["int8", "none"]
QUANTIZATIONS: tuple[Quantization, ...] = ("int8", "none")


# The code of a prunable tensor, by (something was pruned, quantization).
_CODES: dict[tuple[bool, Quantization], str] = {
    (False, "none"): "f32",
    (False, "int8"): "i8",
    (True, "none"): "s32",
    (True, "int8"): "s8",
}


class EncodingError(ValueError):
    """A compressed state's layout and arrays do not fit together."""


@dataclass(frozen=True)
class CompressedState:
    """A state in its stored form; ``sparsity`` is the fraction of prunable weights that were pruned."""

    layout: dict[str, list[Any]]
    arrays: dict[str, np.ndarray]
    sparsity: float


def compress_state(state: Mapping[str, np.ndarray], sparsity: float, quantization: Quantization) -> CompressedState:
    """Prune the prunable tensors to ``sparsity`` (LAMP), quantize if asked, and encode compactly."""
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    masks = prune_masks(state, sparsity)
    layout: dict[str, list[Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in state.items():
        shape = list(tensor.shape)
        if not np.issubdtype(tensor.dtype, np.floating):
            layout[name], arrays[name] = ["raw", shape], tensor
            continue
        if name not in masks:
            layout[name], arrays[name] = ["f32", shape], tensor.astype(np.float32)
            continue
        keep = masks[name]
        weight = np.where(keep, tensor, 0).astype(np.float32)
        sparse = not keep.all()
        if quantization == "int8":
            values, arrays[f"{name}#s"] = quantize_per_channel(weight)
        else:
            values = weight
        if sparse:
            arrays[f"{name}#m"] = np.packbits(keep.ravel())
            values = values[keep]
        layout[name] = [_CODES[sparse, quantization], shape]
        arrays[name] = values
    total = sum(mask.size for mask in masks.values())
    pruned = total - sum(int(mask.sum()) for mask in masks.values())
    return CompressedState(layout, arrays, pruned / total if total else 0.0)


def decompress_state(layout: Mapping[str, list[Any]], arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Dense float32 state (non-float tensors as stored) from an encoded layout and its arrays."""
    state: dict[str, np.ndarray] = {}
    try:
        for name, (code, shape) in layout.items():
            shape = tuple(shape)
            values = arrays[name]
            if code in ("raw", "f32"):
                dense = values.reshape(shape)
            elif code == "i8":
                dense = dequantize_per_channel(values.reshape(shape), arrays[f"{name}#s"])
            elif code in ("s8", "s32"):
                keep = np.unpackbits(arrays[f"{name}#m"], count=math.prod(shape)).astype(bool).reshape(shape)
                dense = np.zeros(shape, dtype=np.float32)
                dense[keep] = values
                if code == "s8":
                    dense = dequantize_per_channel(dense, arrays[f"{name}#s"])
            else:
                raise EncodingError(f"tensor {name!r}: unknown code {code!r}")
            state[name] = dense if code == "raw" else dense.astype(np.float32)
    except (KeyError, ValueError) as err:
        if isinstance(err, EncodingError):
            raise
        raise EncodingError(f"compressed state is inconsistent: {err}") from err
    return state
