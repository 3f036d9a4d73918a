"""Symmetric int8 quantization with one scale per output channel.

For a weight ``W`` whose first axis indexes output channels (Linear: rows; Conv: filters),
channel ``c`` gets ``scale[c] = max |W[c]| / 127`` and is stored as
``Q[c] = clip(round(W[c] / scale[c]), -127, 127)`` in int8; it is read back as
``Q[c] × scale[c]``. The range is symmetric (−128 is never used), zero is exact (so pruned
entries stay zero), and every entry is reconstructed within ``scale[c] / 2`` of its value. A
channel that is entirely zero gets scale 0 and dequantizes to zeros.
"""

from __future__ import annotations

import numpy as np

QMAX = 127


def quantize_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (int8 values of ``weight``'s shape, float32 scales of shape ``(weight.shape[0],)``)."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.float32)
    scales = (np.abs(rows).max(axis=1) / QMAX).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(rows / safe[:, None]), -QMAX, QMAX).astype(np.int8)
    return quantized.reshape(weight.shape), scales


def dequantize_per_channel(quantized: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of :func:`quantize_per_channel` up to rounding: float32 of ``quantized``'s shape."""
    rows = quantized.reshape(quantized.shape[0], -1).astype(np.float32) * scales[:, None].astype(np.float32)
    return rows.reshape(quantized.shape)
