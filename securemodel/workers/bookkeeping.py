"""Book-keeping DP-SGD clipping: every example's gradient clipped and summed with ONE backward pass.

After Bu, Wang, Zha, Karypis, "Differentially Private Optimization on Large Model at Small
Cost" (ICML 2023: book-keeping) and Bu, Mao, Xu, "Scalable and Efficient Training of Large
Convolutional Neural Networks with Differential Privacy" (NeurIPS 2022: mixed ghost clipping).

The exact computation. For a batch of ``B`` examples the loss is ``L = Σ_i ℓ_i`` (cross-entropy,
summed). Every trainable parameter must sit in a layer of :data:`SUPPORTED` that sees the batch
on dimension 0. One forward pass records each such layer's input, and the one backward pass of
``L`` records each layer's output gradient ``G = ∂L/∂out``; as examples are processed
independently, row ``i`` of ``G`` is ``∂ℓ_i/∂out_i``. Example ``i``'s gradient of each
parameter is then, exactly:

* Linear ``y = x Wᵀ + b`` on ``x`` of shape ``(B, …, p)``: with ``A_i`` = example ``i``'s inputs as
  ``T × p`` rows and ``G_i`` its output gradients ``T × d``, ``∇W = G_iᵀ A_i`` and ``∇b = Σ_t G_i,t``;
* Conv1d/Conv2d (``groups = 1``): the same with ``A_i`` the unfolded (im2col) padded input, one row
  per output position, and ``∇W`` reshaped to the kernel's shape;
* Embedding: ``∇W = Σ_t e_{id_t} G_i,tᵀ`` over positions whose id is not ``padding_idx``;
* LayerNorm/GroupNorm ``y = x̂ ⊙ w + b``: ``∇w = Σ G_i ⊙ x̂_i`` and ``∇b = Σ G_i`` over the positions
  (LayerNorm) or the spatial positions of each channel (GroupNorm).

Norms. ``‖G_iᵀ A_i‖²_F`` is computed either by instantiating ``G_iᵀ A_i`` or as the ghost norm
``⟨A_i A_iᵀ, G_i G_iᵀ⟩`` (for Embedding: ``Σ_{t,s} [id_t = id_s] ⟨G_i,t, G_i,s⟩``, always ghost),
chosen per layer by mixed ghost clipping's rule, ghost iff ``2T² < p·d`` (the two Gram
matrices are smaller than the instantiated gradient). All other gradients are instantiated
(they are of the layer's output width). Example ``i``'s norm over all parameters together is
``n_i = sqrt(Σ ‖∇‖²)`` and its clipping factor ``c_i = min(1, C / (n_i + 1e-6))`` (Opacus' formula).

Clipped sum. ``Σ_i c_i ∇_i`` from the recorded ``A`` and ``G`` — ``(c ⊙ G)ᵀ A`` as one product
for ghost layers, ``Σ_i c_i (G_iᵀ A_i)`` for instantiated ones — without a second backward pass
(the book-keeping). While attached, each supported layer's forward computes its usual output
from DETACHED parameters, so the backward pass computes input gradients only: the unclipped
parameter gradient is never formed.

Guarantee. In exact arithmetic example ``i`` contributes ``c_i ∇_i``, of norm
``c_i n_i = min(n_i, C·n_i/(n_i + 1e-6)) < C``, and the result equals Opacus' per-example
clipping (``tests/unit/workers/test_worker_bookkeeping.py`` checks both, with stated
tolerances). Norms are computed in the parameters' dtype, like every DP-SGD library's: if
rounding makes a computed norm ``η`` (relative) too small, that example contributes up to
``C·(1 + η)``, which is the same mechanism with noise multiplier ``σ/(1 + η)``; the tests bound
``η ≤ 1e-6`` in float32. Conditions, checked where possible: every trainable parameter in
exactly one supported layer (:func:`unsupported_layers`), each layer's input batch-first (a
first dimension other than ``B`` raises), and a model that treats examples independently
(BatchNorm is refused by the caller; an operation that mixes examples inside a custom
``forward`` cannot be detected here, as in Opacus). Unlike Opacus 1.6, convolutions with any
``padding_mode``, embeddings with a ``padding_idx`` and in-place operations on a layer's output
are handled exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Final

import torch
import torch.nn.functional as F
from torch import nn

CONV_FUNCTIONS: Final[dict[type[nn.Module], Callable[..., torch.Tensor]]] = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d}
SUPPORTED: Final[tuple[type[nn.Module], ...]] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Embedding,
    nn.LayerNorm,
    nn.GroupNorm,
)


@dataclass
class _Call:
    """One call of a supported layer: what it recorded on the way forward, and its output gradient."""

    saved: torch.Tensor  # Linear: input; conv: padded input; Embedding: ids; norms: normalized input
    padding: tuple[int, ...] = ()  # conv: padding still to apply (zeros) after the explicit pad
    grad: torch.Tensor | None = None


@dataclass
class _Factors:
    """Per-example gradients ``G_iᵀ A_i`` of a weight, as factors ``A`` (B, T, p) and ``G`` (B, T, d)."""

    a: torch.Tensor
    g: torch.Tensor


@dataclass
class _Indexed:
    """Per-example embedding gradients ``Σ_t e_{id_t} G_tᵀ``: ids (B, T), ``G`` (B, T, d), ``rows`` rows."""

    ids: torch.Tensor
    g: torch.Tensor
    rows: int


_Part = _Factors | _Indexed | torch.Tensor  # a tensor: instantiated per-example gradients (B, *shape)


@dataclass(frozen=True)
class ClippedSum:
    """One batch's clipped gradient sum, aligned with the trainable parameters, and how it was clipped."""

    grads: list[torch.Tensor]
    norms: torch.Tensor  # (B,) per-example gradient norms over all parameters
    factors: torch.Tensor  # (B,) c_i = min(1, C / (n_i + 1e-6))


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """``min(1, C / (n_i + 1e-6))``: Opacus' per-example clipping factor."""
    return (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)


def unsupported_layers(model: nn.Module) -> list[str]:
    """Why book-keeping cannot train ``model`` (empty if it can): layers it does not support, shared parameters."""
    problems: list[str] = []
    owners: dict[int, str] = {}
    for name, module in model.named_modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not params:
            continue
        label = f"{name or 'model'} ({type(module).__name__})"
        if type(module) not in SUPPORTED:
            problems.append(f"{label}: not one of {', '.join(t.__name__ for t in SUPPORTED)}")
        elif isinstance(module, nn.Conv1d | nn.Conv2d) and module.groups != 1:
            problems.append(f"{label}: groups={module.groups}")
        elif isinstance(module, nn.Embedding) and (
            module.max_norm is not None or module.scale_grad_by_freq or module.sparse
        ):
            problems.append(f"{label}: max_norm, scale_grad_by_freq or sparse")
        for p in params:
            if id(p) in owners:
                problems.append(f"{label}: shares a parameter with {owners[id(p)]}")
            owners[id(p)] = label
    return problems


class BookKeeping:
    """Book-keeping clipping attached to ``model`` (see the module doc); :meth:`close` restores the model.

    Raises ValueError (naming the layers) for a model :func:`unsupported_layers` finds fault with.
    """

    def __init__(self, model: nn.Module) -> None:
        problems = unsupported_layers(model)
        if problems:
            raise ValueError("book-keeping clipping does not support: " + "; ".join(problems))
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        # Makes the first layer's output (computed from data and detached parameters only) part of the graph.
        self._anchor = torch.zeros((), requires_grad=True)
        self._calls: dict[nn.Module, list[_Call]] = {}
        self._batch = 0
        self._layers = [m for m in model.modules() if any(p.requires_grad for p in m.parameters(recurse=False))]
        for layer in self._layers:
            layer.forward = partial(_FORWARDS[type(layer)], self, layer)  # type: ignore[method-assign]

    def close(self) -> None:
        """Give every layer back its own forward."""
        for layer in self._layers:
            del layer.forward

    def clipped_sum(self, x: torch.Tensor, y: torch.Tensor, max_grad_norm: float) -> ClippedSum:
        """One forward, ONE backward pass on ``(x, y)``; each example's gradient clipped to norm ≤ C, summed."""
        batch = len(y)
        if batch == 0:
            empty = torch.zeros(0, device=y.device)
            return ClippedSum([torch.zeros_like(p) for p in self.params], empty, empty)
        self._calls, self._batch = {}, batch
        try:
            F.cross_entropy(self.model(x), y, reduction="sum").backward()
            parts = self._parts()
        finally:
            self._calls = {}
        norms = torch.zeros(batch, dtype=torch.float64, device=y.device)
        for part_list in parts.values():
            for part in part_list:
                norms += _squared_norms(part).to(torch.float64)
        norms = norms.sqrt().to(self.params[0].dtype)
        factors = clip_factors(norms, max_grad_norm)
        grads = [_clipped(parts.get(p, []), factors, p) for p in self.params]
        return ClippedSum(grads, norms, factors)

    def _record(self, layer: nn.Module, out: torch.Tensor, call: _Call, batch_of: torch.Tensor) -> torch.Tensor:
        if batch_of.shape[0] != self._batch:
            raise ValueError(
                f"{type(layer).__name__} got a first dimension of {batch_of.shape[0]} for a batch of {self._batch}: "
                "book-keeping needs every layer's input batch-first"
            )
        if not out.requires_grad:
            out = out + self._anchor.to(out.dtype)
        out.register_hook(partial(_keep_grad, call))
        self._calls.setdefault(layer, []).append(call)
        return out

    def _parts(self) -> dict[torch.Tensor, list[_Part]]:
        parts: dict[torch.Tensor, list[_Part]] = {}
        for layer, calls in self._calls.items():
            for call in calls:
                if call.grad is None:  # the output did not reach the loss: zero gradient
                    continue
                for param, part in _PARTS[type(layer)](layer, call):
                    if param is not None and param.requires_grad:
                        parts.setdefault(param, []).append(part)
        return {p: [_instantiate(part) for part in _merge(part_list)] for p, part_list in parts.items()}


def _keep_grad(call: _Call, grad: torch.Tensor) -> None:
    call.grad = grad.detach()


def _detached(param: torch.Tensor | None) -> torch.Tensor | None:
    return None if param is None else param.detach()


# ---- forwards: the layer's own output, from detached parameters, recording what the gradients need ----


def _linear_forward(bk: BookKeeping, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    out = F.linear(x, layer.weight.detach(), _detached(layer.bias))
    return bk._record(layer, out, _Call(x.detach()), x)


def _conv_forward(bk: BookKeeping, layer: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    padding: tuple[int, ...]
    if isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        x = F.pad(x, _explicit_padding(layer), mode="constant" if layer.padding_mode == "zeros" else layer.padding_mode)
        padding = (0,) * len(layer.kernel_size)
    else:
        padding = tuple(layer.padding)
    conv = CONV_FUNCTIONS[type(layer)]
    out = conv(x, layer.weight.detach(), _detached(layer.bias), layer.stride, padding, layer.dilation, layer.groups)
    return bk._record(layer, out, _Call(x.detach(), padding), x)


def _explicit_padding(layer: nn.Conv1d | nn.Conv2d) -> list[int]:
    """``F.pad``'s list (last dimension first) for the layer's padding; ``same`` puts the odd one on the right."""
    pads: list[int] = []
    for i in reversed(range(len(layer.kernel_size))):
        if layer.padding == "same":
            total = layer.dilation[i] * (layer.kernel_size[i] - 1)
            pads += [total // 2, total - total // 2]
        elif isinstance(layer.padding, str):  # "valid"
            pads += [0, 0]
        else:
            pads += [layer.padding[i], layer.padding[i]]
    return pads


def _embedding_forward(bk: BookKeeping, layer: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    out = F.embedding(ids, layer.weight.detach(), layer.padding_idx)
    return bk._record(layer, out, _Call(ids), ids)


def _layer_norm_forward(bk: BookKeeping, layer: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    normalized = F.layer_norm(x, layer.normalized_shape, None, None, layer.eps)
    out = _affine(normalized, layer.weight, layer.bias, ())
    return bk._record(layer, out, _Call(normalized.detach()), x)


def _group_norm_forward(bk: BookKeeping, layer: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    normalized = F.group_norm(x, layer.num_groups, None, None, layer.eps)
    out = _affine(normalized, layer.weight, layer.bias, (1,) * (x.dim() - 2))
    return bk._record(layer, out, _Call(normalized.detach()), x)


def _affine(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, trailing: tuple[int, ...]
) -> torch.Tensor:
    if weight is not None:
        x = x * weight.detach().view(*weight.shape, *trailing)
    if bias is not None:
        x = x + bias.detach().view(*bias.shape, *trailing)
    return x


_FORWARDS: Final[dict[type[nn.Module], Callable[..., torch.Tensor]]] = {
    nn.Linear: _linear_forward,
    nn.Conv1d: _conv_forward,
    nn.Conv2d: _conv_forward,
    nn.Embedding: _embedding_forward,
    nn.LayerNorm: _layer_norm_forward,
    nn.GroupNorm: _group_norm_forward,
}

# ---- per-example gradients of one call, by parameter ----

_PartsOf = Iterator[tuple[torch.Tensor | None, _Part]]


def _linear_parts(layer: nn.Linear, call: _Call) -> _PartsOf:
    assert call.grad is not None
    batch = call.grad.shape[0]
    g = call.grad.reshape(batch, -1, layer.out_features)
    yield layer.weight, _Factors(call.saved.reshape(batch, -1, layer.in_features), g)
    yield layer.bias, g.sum(dim=1)


def _conv_parts(layer: nn.Conv1d | nn.Conv2d, call: _Call) -> _PartsOf:
    assert call.grad is not None
    x, batch = call.saved, call.grad.shape[0]
    if isinstance(layer, nn.Conv1d):  # as a 2-D convolution of height 1
        x, kernel, dilation = x.unsqueeze(2), (1, *layer.kernel_size), (1, *layer.dilation)
        padding, stride = (0, *call.padding), (1, *layer.stride)
    else:
        kernel, dilation, padding, stride = layer.kernel_size, layer.dilation, call.padding, layer.stride
    a = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride).transpose(1, 2)
    g = call.grad.reshape(batch, layer.out_channels, -1).transpose(1, 2)
    yield layer.weight, _Factors(a, g)
    yield layer.bias, g.sum(dim=1)


def _embedding_parts(layer: nn.Embedding, call: _Call) -> _PartsOf:
    assert call.grad is not None
    batch = call.grad.shape[0]
    ids, g = call.saved.reshape(batch, -1), call.grad.reshape(batch, -1, layer.embedding_dim)
    if layer.padding_idx is not None:
        g = g * (ids != layer.padding_idx).unsqueeze(-1).to(g.dtype)
    yield layer.weight, _Indexed(ids, g, layer.num_embeddings)


def _layer_norm_parts(layer: nn.LayerNorm, call: _Call) -> _PartsOf:
    assert call.grad is not None
    batch, shape = call.grad.shape[0], layer.normalized_shape
    g = call.grad.reshape(batch, -1, *shape)
    yield layer.weight, (g * call.saved.reshape(g.shape)).sum(dim=1)
    yield layer.bias, g.sum(dim=1)


def _group_norm_parts(layer: nn.GroupNorm, call: _Call) -> _PartsOf:
    assert call.grad is not None
    batch = call.grad.shape[0]
    g = call.grad.reshape(batch, layer.num_channels, -1)
    yield layer.weight, (g * call.saved.reshape(g.shape)).sum(dim=2)
    yield layer.bias, g.sum(dim=2)


_PARTS: Final[dict[type[nn.Module], Callable[..., _PartsOf]]] = {
    nn.Linear: _linear_parts,
    nn.Conv1d: _conv_parts,
    nn.Conv2d: _conv_parts,
    nn.Embedding: _embedding_parts,
    nn.LayerNorm: _layer_norm_parts,
    nn.GroupNorm: _group_norm_parts,
}

# ---- norms and clipped sums ----


def _merge(parts: list[_Part]) -> list[_Part]:
    """A layer called several times: its per-example gradient is the sum over calls (positions concatenated)."""
    if len(parts) == 1:
        return parts
    if all(isinstance(p, _Factors) for p in parts):
        factors = [p for p in parts if isinstance(p, _Factors)]
        return [_Factors(torch.cat([p.a for p in factors], 1), torch.cat([p.g for p in factors], 1))]
    if all(isinstance(p, _Indexed) for p in parts):
        indexed = [p for p in parts if isinstance(p, _Indexed)]
        return [_Indexed(torch.cat([p.ids for p in indexed], 1), torch.cat([p.g for p in indexed], 1), indexed[0].rows)]
    return [torch.stack([p for p in parts if isinstance(p, torch.Tensor)]).sum(0)]


def _ghost_is_cheaper(part: _Factors) -> bool:
    """Mixed ghost clipping's rule (Bu et al. 2022): ghost norm iff ``2T² < p·d``.

    That compares the ghost norm's two Gram matrices with the instantiated gradient per example
    (memory); on the CPU it also measured faster than the rule by multiplications
    ``T²(p + d) < p·d``, which instantiates more (``docs/benchmarks.md``).
    """
    _, t, p = part.a.shape
    d = part.g.shape[2]
    return 2 * t * t < p * d


def _instantiate(part: _Part) -> _Part:
    """Factors as per-example gradients (B, d, p) where that is cheaper than the ghost norm; others unchanged."""
    if isinstance(part, _Factors) and not _ghost_is_cheaper(part):
        return torch.bmm(part.g.transpose(1, 2), part.a)  # (B, d, p)
    return part


def _squared_norms(part: _Part) -> torch.Tensor:
    """(B,) squared Frobenius norms of the per-example gradients ``part`` stands for."""
    if isinstance(part, torch.Tensor):
        return part.reshape(part.shape[0], -1).pow(2).sum(1)
    if isinstance(part, _Factors) and part.a.shape[1] == 1:
        return part.a.pow(2).sum((1, 2)) * part.g.pow(2).sum((1, 2))
    if isinstance(part, _Factors):
        return (torch.bmm(part.a, part.a.transpose(1, 2)) * torch.bmm(part.g, part.g.transpose(1, 2))).sum((1, 2))
    same = (part.ids.unsqueeze(2) == part.ids.unsqueeze(1)).to(part.g.dtype)
    return (same * torch.bmm(part.g, part.g.transpose(1, 2))).sum((1, 2))


def _clipped(parts: list[_Part], factors: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``Σ_i c_i ∇_i`` of one parameter, shaped like it (zero if it received no gradient)."""
    total = torch.zeros_like(param)
    for part in parts:
        if isinstance(part, torch.Tensor):
            total += (factors @ part.reshape(part.shape[0], -1)).view_as(param)
        elif isinstance(part, _Factors):
            scaled = part.g * factors.view(-1, 1, 1)
            total += (scaled.flatten(0, 1).T @ part.a.flatten(0, 1)).view_as(param)
        else:
            scaled = part.g * factors.view(-1, 1, 1)
            total.index_add_(0, part.ids.flatten(), scaled.flatten(0, 1))
    return total
