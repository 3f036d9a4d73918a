"""The built-in architectures the worker image ships, selected by ``spec.model.architecture``.

Every builder has the signature of a custom entrypoint,
``build(input_shape, num_classes, **params) -> torch.nn.Module``, and builds only layers that
Opacus computes per-sample gradients for (Linear, Conv2d; no BatchNorm, whose statistics mix
examples and would break the per-example privacy guarantee).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Final

from torch import nn

ACTIVATIONS: Final[dict[str, Callable[[], nn.Module]]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None


def _positive_ints(name: str, values: Sequence[int]) -> list[int]:
    if isinstance(values, (str, bytes)) or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(f"{name} must be a list of positive integers, got {values!r}")
    return list(values)


def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    hidden: Sequence[int] = (64, 32),
    activation: str = "relu",
) -> nn.Module:
    """A multi-layer perceptron: flatten, then ``Linear → activation`` per entry of ``hidden``, then a linear head.

    Accepts inputs of any per-sample shape (images are flattened). ``hidden=[]`` is
    multinomial logistic regression.
    """
    widths = [math.prod(input_shape), *_positive_ints("hidden", hidden)]
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), _activation(activation)]
    layers.append(nn.Linear(widths[-1], num_classes))
    return nn.Sequential(*layers)


def build_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    channels: Sequence[int] = (16, 32),
    activation: str = "relu",
    kernel_size: int = 3,
) -> nn.Module:
    """A small convolutional net for image-like inputs, e.g. the 8×8 ``digits``.

    ``input_shape`` is ``(height, width)`` (one channel) or ``(channels, height, width)``. Each
    entry of ``channels`` adds ``Conv2d(kernel_size, same padding) → activation`` followed by a
    2×2 max-pool while the feature map is at least 2×2; a linear head reads the flattened maps.
    """
    if len(input_shape) == 2:
        in_channels, height, width = 1, *input_shape
        layers: list[nn.Module] = [nn.Unflatten(1, (1, height))]  # (B, H, W) -> (B, 1, H, W)
    elif len(input_shape) == 3:
        in_channels, height, width = input_shape
        layers = []
    else:
        raise ValueError(
            f"cnn needs image-shaped samples, (height, width) or (channels, height, width); got {input_shape}"
        )
    if not (isinstance(kernel_size, int) and kernel_size > 0 and kernel_size % 2 == 1):
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}")
    for out_channels in _positive_ints("channels", channels):
        layers += [nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2), _activation(activation)]
        if height >= 2 and width >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
        in_channels = out_channels
    layers += [nn.Flatten(), nn.Linear(in_channels * height * width, num_classes)]
    return nn.Sequential(*layers)


BUILTIN: Final[dict[str, Callable[..., nn.Module]]] = {"mlp": build_mlp, "cnn": build_cnn}
