"""Book-keeping clipping is exact: the same clipped sum as Opacus' hooks and as per-example autograd, each term ≤ C.

Tolerances. Against per-example autograd in float64 (the exact reference): norms and clipped
sums within rtol 1e-9. Against Opacus' hooks mode (``OpacusHooks``: Opacus' per-example
gradients, the same clipping formula), both in float32: rtol 1e-4 and atol 1e-6 (the sums are of
order 1e-2 to 1e1; float32 carries 7 digits and the two compute norms in different orders).
Per-example contributions: ``c_i·‖∇ℓ_i‖ ≤ C·(1 + 1e-6)`` for float32 models, ``∇ℓ_i`` from the
model's own float32 autograd and its norm taken in float64 (the float32 norms' rounding; a
relative excess η would act as the noise multiplier σ/(1 + η)).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from securemodel.models.architectures import build_transformer
from securemodel.workers.bookkeeping import BookKeeping, ClippedSum, unsupported_layers
from securemodel.workers.dpsgd import OpacusHooks

torch.set_num_threads(1)  # the unit tests share two cores with everything else


class OnSequences(nn.Module):
    """Linear and LayerNorm on (B, T, d) inputs; the second Linear is called twice (its gradient sums both calls)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp, self.norm, self.shared = nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 8)
        self.plane_norm, self.head = nn.LayerNorm((5, 8)), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(torch.tanh(self.shared(self.norm(self.inp(x)))))
        return self.head(self.plane_norm(h).mean(1))


class Convolutions1d(nn.Module):
    def __init__(self, padding_mode: Literal["zeros", "reflect"] = "zeros") -> None:
        super().__init__()
        self.a = nn.Conv1d(3, 4, 3, stride=2, padding=1)
        self.b = nn.Conv1d(4, 5, 2, padding="same", padding_mode=padding_mode)  # even kernel: uneven padding
        self.head = nn.Linear(5 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.b(torch.relu(self.a(x)))).flatten(1))


class Convolutions2d(nn.Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.a = nn.Conv2d(2, 6, 3, padding=1)
        self.norm = nn.GroupNorm(3, 6)
        self.b = nn.Conv2d(6, 4, (3, 2), stride=(1, 2), dilation=(2, 1), bias=False)
        self.head = nn.Linear(4 * 1 * 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.a(x))
        h = F.max_pool2d(torch.relu_(h) if self.inplace else torch.relu(h), 2)
        return self.head(self.b(h).flatten(1))


class Embedded(nn.Module):
    def __init__(self, padding_idx: int | None = None) -> None:
        super().__init__()
        self.embedding, self.head = nn.Embedding(12, 4, padding_idx=padding_idx), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(x.long()).mean(1))


def _ids(batch: int, length: int, vocabulary: int) -> torch.Tensor:
    return torch.randint(0, vocabulary, (batch, length)).float()  # few ids, so ids repeat within examples


# name -> (model builder, batch of inputs of size b)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[int], torch.Tensor]]] = {
    "linear": (lambda: nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)), lambda b: torch.randn(b, 6)),
    "sequence linear+layernorm": (OnSequences, lambda b: torch.randn(b, 5, 6)),
    "conv1d": (Convolutions1d, lambda b: torch.randn(b, 3, 12)),
    "conv1d reflect padding": (lambda: Convolutions1d("reflect"), lambda b: torch.randn(b, 3, 12)),
    "conv2d+groupnorm": (Convolutions2d, lambda b: torch.randn(b, 2, 10, 8)),
    "conv2d in-place relu": (lambda: Convolutions2d(inplace=True), lambda b: torch.randn(b, 2, 10, 8)),
    "embedding": (Embedded, lambda b: _ids(b, 9, 12)),
    "embedding padding_idx": (lambda: Embedded(padding_idx=0), lambda b: _ids(b, 9, 12)),
    "transformer": (
        lambda: build_transformer((7,), 3, vocabulary=10, width=8, heads=2, layers=1, hidden=16),
        lambda b: _ids(b, 7, 10),
    ),
}


def batch_of(case: str, size: int, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A random model and batch; float inputs scaled so examples lie far above and far below the median norm."""
    build, inputs = CASES[case]
    torch.manual_seed(seed)
    model, x, y = build(), inputs(size), torch.randint(0, 3, (size,))
    if x.is_floating_point() and not case.startswith(("embedding", "transformer")):
        x[::3] *= 1e3
        x[1::3] *= 1e-3
    return model, x, y


def per_example_gradients(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """(B, P): every example's gradient by its own autograd pass, in ``dtype``, returned as float64."""
    model = model.to(dtype)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    for i in range(len(y)):
        loss = F.cross_entropy(model(x[i : i + 1].to(dtype)), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, params)]))
    return torch.stack(rows).double()


def book_keeping(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> ClippedSum:
    bk = BookKeeping(model)
    try:
        return bk.clipped_sum(x, y, clip)
    finally:
        bk.close()


def opacus_hooks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float) -> ClippedSum:
    hooks = OpacusHooks(model)
    try:
        return hooks.clipped_sum(x, y, clip)
    finally:
        hooks.close()


def flat(grads: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.parametrize("case", CASES)
def test_every_supported_layer_gives_the_exact_clipped_sum_in_float64(case: str) -> None:
    model, x, y = batch_of(case, 17, seed=1)
    reference = per_example_gradients(model, x, y)
    norms = reference.norm(dim=1)
    clip = norms.median().item()  # about half the examples are clipped
    assert unsupported_layers(model) == []

    result = book_keeping(model, x.double(), y, clip)

    torch.testing.assert_close(result.norms, norms, rtol=1e-9, atol=1e-12)
    expected = ((clip / (norms + 1e-6)).clamp(max=1.0)[:, None] * reference).sum(0)
    torch.testing.assert_close(flat(result.grads), expected, rtol=1e-9, atol=1e-12)
    assert (result.factors < 1).sum() >= 6 and (result.factors == 1).sum() >= 6


# Opacus 1.6's conv grad sampler pads with zeros whatever the layer's padding_mode, and its
# embedding grad sampler gives the padding_idx row a gradient: its per-example gradients are
# wrong there (OpacusHooks refuses such layers). Its full backward hooks raise on an in-place
# operation on a hooked layer's output. Book-keeping is exact on all three (float64 test).
OPACUS_CANNOT = {"conv1d reflect padding", "conv2d in-place relu", "embedding padding_idx"}


@pytest.mark.parametrize("case", [case for case in CASES if case not in OPACUS_CANNOT])
@pytest.mark.parametrize("size", [0, 1, 17])
def test_the_clipped_sum_equals_opacus_hooks_mode_in_float32(case: str, size: int) -> None:
    model, x, y = batch_of(case, size, seed=2)
    twin, _, _ = batch_of(case, size, seed=2)  # the same weights, for Opacus
    clip = 1.0

    ours, theirs = book_keeping(model, x, y, clip), opacus_hooks(twin, x, y, clip)

    assert all(g.shape == p.shape for g, p in zip(ours.grads, model.parameters(), strict=True))
    torch.testing.assert_close(flat(ours.grads), flat(theirs.grads), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.norms, theirs.norms, rtol=1e-4, atol=1e-6)
    if size == 0:
        assert not flat(ours.grads).any()


@pytest.mark.parametrize("case", CASES)
def test_each_example_contributes_at_most_the_clipping_norm(case: str) -> None:
    model, x, y = batch_of(case, 17, seed=3)
    clip = 1e-2  # far below most examples' norms
    result = book_keeping(model, x, y, clip)
    # the float32 model's own per-example gradients, their norms taken in float64: what is clipped
    true_norms = per_example_gradients(model, x, y, torch.float32).norm(dim=1)

    contributions = result.factors.double() * true_norms
    assert (contributions <= clip * (1 + 1e-6)).all()
    assert (true_norms > 10 * clip).sum() >= 10  # the bound was tested where clipping matters


def test_far_below_the_norm_nothing_is_clipped_and_far_above_every_example_weighs_c() -> None:
    model, x, y = batch_of("conv2d+groupnorm", 9, seed=4)
    reference = per_example_gradients(model, x, y)
    model = model.float()

    unclipped = book_keeping(model, x, y, 1e6)
    torch.testing.assert_close(flat(unclipped.grads), reference.sum(0).float(), rtol=1e-4, atol=1e-5)
    clip = 1e-4
    tiny = book_keeping(model, x, y, clip)
    unit = reference / reference.norm(dim=1, keepdim=True)
    torch.testing.assert_close(flat(tiny.grads), (clip * unit.sum(0)).float(), rtol=1e-3, atol=1e-9)


def test_the_model_is_given_back_unchanged() -> None:
    model, x, y = batch_of("conv2d+groupnorm", 5, seed=5)
    before = model(x)
    bk = BookKeeping(model)
    bk.clipped_sum(x, y, 1.0)
    bk.close()
    assert all(p.grad is None for p in model.parameters())  # the unclipped gradient is never formed
    assert all("forward" not in vars(m) for m in model.modules())
    torch.testing.assert_close(model(x), before)


def test_opacus_hooks_refuses_layers_it_would_get_wrong() -> None:
    with pytest.raises(ValueError, match="padding_mode"):
        OpacusHooks(Convolutions1d("reflect"))
    with pytest.raises(ValueError, match="padding_idx"):
        OpacusHooks(Embedded(padding_idx=0))


def test_a_layer_that_does_not_see_the_batch_first_is_refused() -> None:
    class TimeFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x.transpose(0, 1)).mean(0)  # (T, B, d): per-example norms would be wrong

    bk = BookKeeping(TimeFirst())
    with pytest.raises(ValueError, match="batch-first"):
        bk.clipped_sum(torch.randn(3, 5, 4), torch.zeros(3, dtype=torch.long), 1.0)
    bk.close()
