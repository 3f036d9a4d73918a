"""Layer-adaptive (LAMP) magnitude pruning and symmetric per-channel int8 quantization."""

from __future__ import annotations

import numpy as np
import pytest

from securemodel.compression.pruning import is_prunable, lamp_scores, prune_masks
from securemodel.compression.quantization import QMAX, dequantize_per_channel, quantize_per_channel

RNG = np.random.default_rng(3)


def layered_state() -> dict[str, np.ndarray]:
    """Weights of very different scales per layer, plus a bias."""
    return {
        "big.weight": RNG.normal(size=(64, 30)).astype(np.float32) * 10,
        "conv.weight": RNG.normal(size=(16, 4, 3, 3)).astype(np.float32),
        "small.weight": RNG.normal(size=(7, 3)).astype(np.float32) * 1e-3,
        "big.bias": RNG.normal(size=64).astype(np.float32),
    }


def test_lamp_scores_follow_the_definition() -> None:
    # squares 1, 4, 9: 1/(1+4+9), 4/(4+9), 9/9
    np.testing.assert_allclose(lamp_scores(np.array([[3.0, -1.0, 2.0]])), [[1.0, 1 / 14, 4 / 13]])
    assert lamp_scores(np.zeros((2, 2))).max() == 0


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.5, 0.9])
def test_exactly_the_target_share_of_weights_is_pruned_smallest_first(sparsity: float) -> None:
    state = layered_state()
    masks = prune_masks(state, sparsity)

    assert set(masks) == {"big.weight", "conv.weight", "small.weight"}  # never biases
    total = sum(m.size for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(sparsity * total)
    for name, keep in masks.items():
        assert keep.shape == state[name].shape
        if (~keep).any():  # within a layer, the pruned weights are the smallest ones
            assert np.abs(state[name][~keep]).max() <= np.abs(state[name][keep]).min()


def test_a_layer_of_small_weights_is_not_wiped_out() -> None:
    state = layered_state()
    masks = prune_masks(state, 0.9)
    # one global magnitude threshold would remove every weight of the 1e-3-scaled layer
    threshold = np.quantile(np.concatenate([np.abs(state[n]).ravel() for n in masks]), 0.9)
    assert (np.abs(state["small.weight"]) <= threshold).all()
    assert masks["small.weight"].any()
    assert all(keep.any() for keep in masks.values())


def test_ties_are_broken_deterministically() -> None:
    state = {"w": np.ones((4, 4), dtype=np.float32)}
    keep = prune_masks(state, 0.25)["w"]
    assert (~keep).sum() == 4
    np.testing.assert_array_equal(keep, prune_masks(state, 0.25)["w"])


def test_only_weight_matrices_and_kernels_are_prunable() -> None:
    assert is_prunable(np.zeros((3, 4), np.float32)) and is_prunable(np.zeros((2, 1, 3, 3), np.float32))
    assert not is_prunable(np.zeros(4, np.float32))  # biases, norm scales
    assert not is_prunable(np.zeros((3, 4), np.int64))


@pytest.mark.parametrize("sparsity", [-0.1, 1.0])
def test_sparsity_outside_zero_one_is_refused(sparsity: float) -> None:
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        prune_masks({"w": np.ones((2, 2))}, sparsity)


@pytest.mark.parametrize("shape", [(32, 30), (8, 4, 3, 3)])
def test_int8_per_channel_error_is_at_most_half_a_step(shape: tuple[int, ...]) -> None:
    # channels of very different magnitudes: a per-tensor scale would crush the small ones
    weight = (RNG.normal(size=shape) * np.logspace(-3, 1, shape[0]).reshape(-1, *[1] * (len(shape) - 1))).astype(
        np.float32
    )
    quantized, scales = quantize_per_channel(weight)
    assert quantized.dtype == np.int8 and quantized.shape == shape and scales.shape == (shape[0],)
    assert quantized.min() >= -QMAX and quantized.max() <= QMAX
    error = np.abs(dequantize_per_channel(quantized, scales) - weight).reshape(shape[0], -1).max(axis=1)
    assert np.all(error <= scales / 2 * (1 + 1e-5))
    # the largest entry of every channel is represented exactly at ±127
    assert np.all(np.abs(quantized).reshape(shape[0], -1).max(axis=1) == QMAX)


def test_zeros_stay_zero_and_an_all_zero_channel_is_fine() -> None:
    weight = RNG.normal(size=(3, 5)).astype(np.float32)
    weight[1] = 0
    weight[0, :2] = 0
    quantized, scales = quantize_per_channel(weight)
    restored = dequantize_per_channel(quantized, scales)
    assert scales[1] == 0 and not restored[1].any()
    assert not restored[0, :2].any()
