"""The stored form really shrinks, and decodes to exactly the pruned and quantized weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from securemodel.compression import EncodingError, compress_state, decompress_state
from securemodel.compression.pruning import prune_masks
from securemodel.compression.quantization import dequantize_per_channel, quantize_per_channel
from securemodel.models.container import pack

RNG = np.random.default_rng(11)


def mlp_state(widths: list[int]) -> dict[str, np.ndarray]:
    """A state shaped like the built-in MLP's: Linear weights (out, in) and biases."""
    state = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        state[f"{2 * i + 1}.weight"] = RNG.normal(size=(fan_out, fan_in)).astype(np.float32)
        state[f"{2 * i + 1}.bias"] = RNG.normal(size=fan_out).astype(np.float32)
    return state


def stored_bytes(arrays: dict[str, np.ndarray]) -> int:
    return len(pack({}, arrays))


def test_sparsity_half_plus_int8_is_at_least_three_times_smaller_than_fp32() -> None:
    # the example SecureModel: breast_cancer (30 features), hidden [64, 32], 2 classes
    state = mlp_state([30, 64, 32, 2])
    compressed = compress_state(state, 0.5, "int8")
    fp32, small = stored_bytes(state), stored_bytes(compressed.arrays)
    assert small * 3 <= fp32, f"{fp32} -> {small} bytes"
    # and the arrays themselves are near the 5-bits-per-weight ideal (1 mask bit + 8 bits × 0.5)
    weights = sum(a.size for a in state.values() if a.ndim == 2)
    assert sum(a.nbytes for a in compressed.arrays.values()) < weights * 5 / 8 + 1000


def test_more_sparsity_means_fewer_bytes() -> None:
    state = mlp_state([64, 128, 64, 10])
    sizes = [stored_bytes(compress_state(state, s, "int8").arrays) for s in (0.0, 0.25, 0.5, 0.75, 0.9)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    assert stored_bytes(compress_state(state, 0.0, "int8").arrays) * 3.5 < stored_bytes(state)


@pytest.mark.parametrize("quantization", ["int8", "none"])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5])
def test_decoding_gives_exactly_the_pruned_and_quantized_weights(sparsity: float, quantization: str) -> None:
    state = mlp_state([20, 16, 3])
    state["conv.weight"] = RNG.normal(size=(4, 2, 3, 3)).astype(np.float32)
    compressed = compress_state(state, sparsity, quantization)  # type: ignore[arg-type]

    decoded = decompress_state(compressed.layout, compressed.arrays)

    assert compressed.sparsity == pytest.approx(sparsity, abs=0.001)
    masks = prune_masks(state, sparsity)
    for name, original in state.items():
        assert decoded[name].dtype == np.float32 and decoded[name].shape == original.shape
        if original.ndim == 1:
            np.testing.assert_array_equal(decoded[name], original)  # biases untouched
            continue
        expected = np.where(masks[name], original, 0).astype(np.float32)
        if quantization == "int8":
            expected = dequantize_per_channel(*quantize_per_channel(expected))
        np.testing.assert_array_equal(decoded[name], expected)
    prunable = [decoded[name] for name in masks]
    assert sum(int((w == 0).sum()) for w in prunable) >= round(sparsity * sum(w.size for w in prunable))


def test_integer_buffers_are_kept_as_they_are() -> None:
    state: dict[str, np.ndarray] = {
        "w": RNG.normal(size=(4, 4)).astype(np.float32),
        "steps": np.array([7], dtype=np.int64),
    }
    compressed = compress_state(state, 0.5, "int8")
    decoded = decompress_state(compressed.layout, compressed.arrays)
    assert decoded["steps"].dtype == np.int64 and decoded["steps"][0] == 7


def test_inconsistent_layout_is_refused() -> None:
    compressed = compress_state(mlp_state([4, 3]), 0.5, "int8")
    arrays = dict(compressed.arrays)
    del arrays["1.weight#m"]
    with pytest.raises(EncodingError, match="inconsistent"):
        decompress_state(compressed.layout, arrays)
    with pytest.raises(ValueError, match="quantization must be one of"):
        compress_state(mlp_state([4, 3]), 0.5, "int4")  # type: ignore[arg-type]
