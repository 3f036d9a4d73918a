"""The built-in architectures the worker image ships, selected by ``spec.model.architecture``.

Every builder has the signature of a custom entrypoint,
``build(input_shape, num_classes, **params) -> torch.nn.Module``, and puts every parameter in a
layer the train worker's book-keeping DP-SGD clips per example (Linear, Conv2d, Embedding,
LayerNorm; no BatchNorm, whose statistics mix examples and would break the per-example privacy
guarantee), each layer seeing the batch on its first dimension.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Final

import torch
import torch.nn.functional as F
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


class SelfAttention(nn.Module):
    """Multi-head self-attention over ``(batch, length, width)`` from two Linear layers (qkv and output).

    The same function as ``torch.nn.MultiheadAttention`` without masking or dropout, but built so
    that every parameter sits in a Linear layer, which DP-SGD's book-keeping supports.
    """

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v)  # (batch, heads, length, width / heads)
        return self.out(mixed.transpose(1, 2).reshape(batch, length, width))


class EncoderBlock(nn.Module):
    """A pre-LayerNorm transformer encoder block: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, width: int, heads: int, hidden: int, activation: str) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), _activation(activation), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class TokenTransformer(nn.Module):
    """A transformer encoder classifying fixed-length sequences of token ids; see :func:`build_transformer`."""

    position_ids: torch.Tensor

    def __init__(
        self, length: int, num_classes: int, vocabulary: int, width: int, heads: int, layers: int, hidden: int,
        activation: str,
    ) -> None:  # fmt: skip
        super().__init__()
        self.vocabulary = vocabulary
        self.tokens = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(length, width)
        self.blocks = nn.Sequential(*(EncoderBlock(width, heads, hidden, activation) for _ in range(layers)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.register_buffer("position_ids", torch.arange(length), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x.long()
        if x.is_floating_point() and not torch.equal(ids.to(x.dtype), x):
            raise ValueError("token ids must be whole numbers")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.vocabulary):
            raise ValueError(f"token ids must lie in [0, {self.vocabulary})")
        positions = self.position_ids.repeat(len(ids), 1)  # batch-first, as per-example clipping needs
        h = self.blocks(self.tokens(ids) + self.positions(positions))
        return self.head(self.norm(h).mean(dim=1))


def build_transformer(
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    vocabulary: int = 256,
    width: int = 64,
    heads: int = 4,
    layers: int = 2,
    hidden: int = 128,
    activation: str = "gelu",
) -> nn.Module:
    """A small transformer encoder for sequence classification: token ids in, class logits out.

    ``input_shape`` is ``(length,)``: each sample is ``length`` token ids in ``[0, vocabulary)``
    (any numeric dtype holding whole numbers, so the float32 batches of the workers and OIP
    requests in FP32 or INT64 all work; other values raise ValueError). Token and learned
    position embeddings of ``width``, ``layers`` pre-LayerNorm encoder blocks (``heads``-head
    self-attention without masking, a ``hidden``-wide MLP with ``activation``), a final
    LayerNorm, the mean over positions and a linear head. No dropout and no BatchNorm.
    """
    if len(input_shape) != 1 or input_shape[0] < 1:
        raise ValueError(f"transformer needs samples of shape (length,) of token ids; got {input_shape}")
    vocabulary, width, heads, layers, hidden = _positive_ints(
        "vocabulary, width, heads, layers and hidden", [vocabulary, width, heads, layers, hidden]
    )
    return TokenTransformer(input_shape[0], num_classes, vocabulary, width, heads, layers, hidden, activation)


BUILTIN: Final[dict[str, Callable[..., nn.Module]]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "transformer": build_transformer,
}
