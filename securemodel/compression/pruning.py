"""Magnitude pruning with layer-adaptive sparsity (LAMP).

Which tensors are pruned: every floating-point tensor of the state with two or more
dimensions, i.e. the weight matrices of Linear layers, the kernels of Conv layers and embedding
tables. One-dimensional tensors (biases, the affine parameters of normalization layers, buffers)
are never pruned: they are a tiny share of the bytes and removing them shifts whole activations.

How much of each: global, by LAMP score (Lee, Park, Mo, Ahn and Shin, "Layer-adaptive sparsity
for the magnitude-based pruning", ICLR 2021). Within a tensor whose squared entries sorted
ascending are ``w_1² ≤ … ≤ w_m²``, entry ``u`` scores ``w_u² / Σ_{v ≥ u} w_v²``; exactly
``round(sparsity × N)`` of the ``N`` prunable weights with the lowest scores are removed (ties
broken by position, so the result is deterministic). Within a tensor the score grows with the
magnitude, so each tensor loses its smallest weights; across tensors the score is scale-free,
so a layer of small weights is not wiped out as it is under one global magnitude threshold; the
largest weight of every tensor scores 1, the maximum, so no tensor is emptied while any other
weight is left to prune. Chosen over uniform per-layer
sparsity and over a global magnitude threshold because it kept the most validation accuracy of
DP-trained models in our measurements (docs/benchmarks.md), with no data and no fine-tuning.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def is_prunable(array: np.ndarray) -> bool:
    """Whether a state tensor is a weight matrix or kernel that pruning and quantization apply to."""
    return array.ndim >= 2 and np.issubdtype(array.dtype, np.floating)


def lamp_scores(weight: np.ndarray) -> np.ndarray:
    """The LAMP score of every entry of ``weight`` (same shape, float64, in (0, 1]; 0 for zero entries)."""
    squares = np.square(weight.astype(np.float64)).ravel()
    order = np.argsort(squares, kind="stable")
    ascending = squares[order]
    remaining = np.cumsum(ascending[::-1])[::-1]  # Σ_{v ≥ u} w_v²
    scores = np.empty_like(squares)
    scores[order] = np.divide(ascending, remaining, out=np.zeros_like(ascending), where=remaining > 0)
    return scores.reshape(weight.shape)


def prune_masks(state: Mapping[str, np.ndarray], sparsity: float) -> dict[str, np.ndarray]:
    """Boolean keep-masks for the prunable tensors of ``state``: the lowest-LAMP ``sparsity`` share is dropped."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    names = [name for name, array in state.items() if is_prunable(array)]
    if not names:
        return {}
    scores = np.concatenate([lamp_scores(state[name]).ravel() for name in names])
    keep = np.ones(scores.size, dtype=bool)
    keep[np.argsort(scores, kind="stable")[: int(round(sparsity * scores.size))]] = False
    masks, offset = {}, 0
    for name in names:
        size = state[name].size
        masks[name] = keep[offset : offset + size].reshape(state[name].shape)
        offset += size
    return masks
