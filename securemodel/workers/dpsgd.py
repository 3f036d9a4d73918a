"""DP-SGD at exactly the noise multiplier, sample rate and steps the operator calibrated.

The mechanism. Let ``n`` be the number of training examples, ``q`` the sample rate, ``σ`` the
noise multiplier and ``C`` the clipping norm. Each of exactly ``steps`` iterations

1. draws a batch by Poisson sampling: every training example is included independently with
   probability ``q`` (the batch size varies and may be 0; there are no epochs and no
   fixed-size batches);
2. computes every example's gradient of its cross-entropy loss and scales it to L2 norm at
   most ``C`` over all trained parameters together ("flat" clipping), and sums the scaled
   gradients (an empty batch sums to zero);
3. adds Gaussian noise ``N(0, σ²C²·I)`` to that SUM and divides by the expected batch size ``q·n``;
4. hands that to the optimizer (SGD or Adam: post-processing).

The trained parameters are those with ``requires_grad`` (:mod:`.finetune` freezes the others and
adds LoRA adapters): a frozen parameter is neither clipped, noised nor updated, and the noise has
exactly one coordinate per trained scalar; the guarantee is the same for any such split, which
the arguments decide, never the data.

This is the Poisson-subsampled Gaussian mechanism with noise multiplier ``σ`` composed
``steps`` times, the mechanism :mod:`securemodel.privacy.accounting` accounts for. The released
model (and every intermediate one) is therefore (ε, δ)-DP with respect to adding or removing
one TRAINING example, for the accountant's ε at (σ, q, steps, δ); if the run stops early, the
steps actually run (:class:`DPSGDProgress`) are what was spent. The guarantee needs the model
to treat examples independently: Opacus' ``ModuleValidator`` rejects layers that mix examples
(BatchNorm) before any data is used.

Secret randomness. The sampling of step 1 and the noise of step 3 come from one
:class:`~securemodel.workers.secret_random.SecretRandom` per run (AES-256-CTR under a key from
``os.urandom``, Opacus' secure-mode noise construction; see there for the exact laws and their
floating-point caveats). Nothing about it is an argument, a log line or part of the artifact;
``DPSGDConfig`` has no seed. Two runs with identical arguments add independent noise.

Clipping mode (step 2), recorded in the result: ``bookkeeping`` (:mod:`.bookkeeping`: per-example
norms and the clipped sum from one backward pass) when every trainable parameter sits in a
Linear, Conv1d/2d, Embedding, LayerNorm or GroupNorm layer of its own; otherwise
``opacus-hooks``, per-example gradients from Opacus' ``GradSampleModule`` (hooks, functorch for
layers without a sampler), clipped and summed here. Both feed the same steps 1, 3 and 4.

What it does not cover: preprocessing fitted on the data before training (see
:mod:`securemodel.data.loading`) and anything computed from validation examples (e.g. the
reported accuracy); floating-point rounding in the norms, as in every DP-SGD library.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from opacus.grad_sample import GradSampleModule
from opacus.validators import ModuleValidator
from torch import nn

from securemodel.workers.bookkeeping import (
    BookKeeping,
    ClippedSum,
    clip_factors,
    unsupported_layers,
)
from securemodel.workers.secret_random import SecretRandom

ClippingMode = Literal["bookkeeping", "opacus-hooks"]
Optimizer = Literal["sgd", "adam"]


class DPCompatibilityError(ValueError):
    """The model contains layers DP-SGD cannot train with per-example privacy (e.g. BatchNorm)."""


@dataclass(frozen=True)
class DPSGDConfig:
    """The operator's calibrated DP-SGD parameters and the optimizer's hyper-parameters (no seed: see the module)."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    learning_rate: float
    optimizer: Optimizer = "sgd"

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {self.noise_multiplier}")
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.max_grad_norm > 0 or not self.learning_rate > 0:
            raise ValueError("max_grad_norm and learning_rate must be > 0")


@dataclass
class DPSGDProgress:
    """Updated as training runs, so a failure still tells how many noisy steps were taken."""

    steps: int = 0
    sampled_examples: int = 0


@dataclass(frozen=True)
class DPSGDReport:
    """What a finished run did: ``steps`` noisy optimizer steps, and how."""

    steps: int
    clipping_mode: ClippingMode
    device: str
    train_examples: int
    sampled_examples: int

    @property
    def empirical_sample_rate(self) -> float:
        """Examples drawn per step per training example; estimates q."""
        return self.sampled_examples / (self.steps * self.train_examples)


class Clipper(Protocol):
    """Step 2 of the module doc for one batch: each example's gradient clipped to norm ≤ C, summed."""

    params: list[nn.Parameter]

    def clipped_sum(self, x: torch.Tensor, y: torch.Tensor, max_grad_norm: float) -> ClippedSum: ...

    def close(self) -> None: ...


class OpacusHooks:
    """Per-example gradients from Opacus' ``GradSampleModule`` (loss summed), clipped and summed as book-keeping does.

    Refuses (:class:`DPCompatibilityError`) layers whose per-example gradients Opacus 1.6 gets
    wrong, which would make the norms and the clipping wrong: convolutions with a
    ``padding_mode`` other than ``zeros`` (its conv sampler pads with zeros regardless) and
    embeddings with a ``padding_idx`` (its sampler gives that row a gradient). Book-keeping
    handles both exactly.
    """

    def __init__(self, model: nn.Module) -> None:
        for name, m in model.named_modules():
            if getattr(m, "padding_mode", "zeros") != "zeros" or getattr(m, "padding_idx", None) is not None:
                raise DPCompatibilityError(
                    f"{name} ({type(m).__name__}): Opacus' per-example gradients are wrong with its padding_mode or "
                    "padding_idx, and another layer of the model needs Opacus"
                )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._wrapped = GradSampleModule(model, batch_first=True, loss_reduction="sum")

    def clipped_sum(self, x: torch.Tensor, y: torch.Tensor, max_grad_norm: float) -> ClippedSum:
        """Forward and backward on ``(x, y)``; ``Σ_i min(1, C/(n_i + 1e-6)) ∇ℓ_i``."""
        if len(y) == 0:
            empty = torch.zeros(0, device=y.device)
            return ClippedSum([torch.zeros_like(p) for p in self.params], empty, empty)
        self._wrapped.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # Opacus' hooks fire on the first layer, whose input needs no gradient: harmless.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            F.cross_entropy(self._wrapped(x), y, reduction="sum").backward()
        samples = [_grad_sample(p, len(y)) for p in self.params]
        norms = torch.stack([s.pow(2).sum(1) for s in samples]).sum(0).sqrt()
        factors = clip_factors(norms, max_grad_norm)
        grads = [(factors @ s).view_as(p) for s, p in zip(samples, self.params, strict=True)]
        return ClippedSum(grads, norms, factors)

    def close(self) -> None:
        """Remove Opacus' hooks and attributes from the model."""
        self._wrapped.cleanup()


def _grad_sample(param: nn.Parameter, batch: int) -> torch.Tensor:
    """The parameter's per-example gradients flattened to (B, numel); zeros if it got none."""
    sample = getattr(param, "grad_sample", None)
    if sample is None:
        return torch.zeros(batch, param.numel(), dtype=param.dtype, device=param.device)
    return sample.reshape(batch, -1)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available and the CPU otherwise; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    return device


def clipping_mode_for(model: nn.Module) -> ClippingMode:
    """``bookkeeping`` if every trainable parameter sits in a supported layer of its own, else ``opacus-hooks``."""
    return "opacus-hooks" if unsupported_layers(model) else "bookkeeping"


def make_clipper(model: nn.Module, mode: ClippingMode) -> Clipper:
    """The clipper of ``mode`` attached to ``model`` (call its ``close`` when done)."""
    return BookKeeping(model) if mode == "bookkeeping" else OpacusHooks(model)


def check_dp_compatible(model: nn.Module) -> None:
    """Raise :class:`DPCompatibilityError` for layers Opacus cannot train privately, or no trainable parameters."""
    if not any(p.requires_grad for p in model.parameters()):
        raise DPCompatibilityError("the model has no trainable parameters")
    was_training = model.training
    model.train()
    errors = ModuleValidator.validate(model, strict=False)
    model.train(was_training)
    if errors:
        raise DPCompatibilityError("the model cannot be trained with DP-SGD: " + "; ".join(map(str, errors)))


def train_dp_sgd(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    config: DPSGDConfig,
    *,
    device: torch.device,
    progress: DPSGDProgress | None = None,
    mode: ClippingMode | None = None,
) -> DPSGDReport:
    """Train ``model`` in place on ``(x, y)`` (network inputs, integer labels) with DP-SGD; see the module doc.

    Runs exactly ``config.steps`` noisy steps; ``progress`` (if given) is updated after each one.
    ``mode`` overrides the automatic :func:`clipping_mode_for` (for benchmarks and tests); the
    privacy guarantee is the same in both modes.
    """
    check_dp_compatible(model)
    progress = progress if progress is not None else DPSGDProgress()
    n = len(y)
    inputs = torch.as_tensor(x, dtype=torch.float32, device=device)
    labels = torch.as_tensor(y, dtype=torch.long, device=device)
    model.to(device).train()
    mode = mode or clipping_mode_for(model)
    optimizer = _optimizer(model, config)
    secret = SecretRandom()
    clipper = make_clipper(model, mode)
    noise_std = config.noise_multiplier * config.max_grad_norm
    expected_batch = config.sample_rate * n  # the mean is over the EXPECTED batch size
    sizes = [p.numel() for p in clipper.params]
    try:
        for _ in range(config.steps):
            batch = torch.as_tensor(secret.poisson_sample(n, config.sample_rate), device=device)
            clipped = clipper.clipped_sum(inputs[batch], labels[batch], config.max_grad_norm)
            dtype = clipper.params[0].dtype
            noise = secret.gaussian(sum(sizes), noise_std, dtype=dtype, device=device).split(sizes)
            for param, grad, z in zip(clipper.params, clipped.grads, noise, strict=True):
                param.grad = (grad + z.view_as(grad)) / expected_batch
            optimizer.step()
            progress.steps += 1
            progress.sampled_examples += len(batch)
    finally:
        clipper.close()
    model.eval()
    return DPSGDReport(progress.steps, mode, str(device), n, progress.sampled_examples)


def _optimizer(model: nn.Module, config: DPSGDConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.learning_rate)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
