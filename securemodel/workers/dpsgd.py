"""DP-SGD with Opacus at exactly the noise multiplier, sample rate and steps the operator calibrated.

The mechanism. Let ``n`` be the number of training examples, ``q`` the sample rate, ``σ`` the
noise multiplier and ``C`` the clipping norm. Each of exactly ``steps`` iterations

1. draws a batch by Poisson sampling: every training example is included independently with
   probability ``q`` (Opacus' ``UniformWithReplacementSampler``; the batch size varies and may
   be 0; there are no epochs and no fixed-size batches);
2. computes every example's gradient of the cross-entropy loss and scales it to L2 norm at
   most ``C`` over all parameters together ("flat" clipping);
3. adds Gaussian noise ``N(0, σ²C²·I)`` to the SUM of the clipped gradients and divides by the
   expected batch size ``q·n``;
4. hands that to the optimizer (SGD or Adam: post-processing).

This is the Poisson-subsampled Gaussian mechanism with noise multiplier ``σ`` composed
``steps`` times, the mechanism :mod:`securemodel.privacy.accounting` accounts for. The released
model (and every intermediate one) is therefore (ε, δ)-DP with respect to adding or removing
one TRAINING example, for the accountant's ε at (σ, q, steps, δ); if the run stops early, the
steps actually run (:class:`DPSGDProgress`) are what was spent. The guarantee needs the model
to treat examples independently: Opacus' ``ModuleValidator`` rejects layers that mix examples
(BatchNorm) before any data is used.

What it does not cover: noise and sampling come from torch's seeded pseudo-random generators
(reproducible runs; Opacus' ``secure_mode`` with a cryptographic generator is not used), so the
guarantee is against an adversary who does not know the seed, and the floating-point caveats
of sampled Gaussian noise apply. Preprocessing fitted on the data before training (see
:mod:`securemodel.data.loading`) and anything computed from validation examples (e.g. the
reported accuracy) are outside it.

Clipping mode: ghost clipping (Opacus ``grad_sample_mode="ghost"``, Li et al. 2022; Bu et al.
2023) computes per-example gradient norms without materializing per-example gradients, at the
cost of a second backward pass. Opacus has ghost norm samplers only for Linear and Embedding
layers; on other layers "ghost" mode materializes per-example gradients anyway (fast gradient
clipping) and then pays for the second pass too, which measured slower than plain hooks for
our CNN (see docs/benchmarks.md). So a model runs in ``ghost`` mode when every layer with
trainable parameters has a ghost norm sampler and no parameter is shared between layers, and in
``hooks`` mode (per-example gradients from hooks) otherwise.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from opacus.grad_sample import GradSampleModule, GradSampleModuleFastGradientClipping
from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.utils.uniform_sampler import UniformWithReplacementSampler
from opacus.validators import ModuleValidator
from torch import nn

ClippingMode = Literal["ghost", "hooks"]
Optimizer = Literal["sgd", "adam"]


class DPCompatibilityError(ValueError):
    """The model contains layers DP-SGD cannot train with per-example privacy (e.g. BatchNorm)."""


@dataclass(frozen=True)
class DPSGDConfig:
    """The operator's calibrated DP-SGD parameters and the optimizer's hyper-parameters."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    learning_rate: float
    optimizer: Optimizer = "sgd"
    seed: int = 0

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


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available and the CPU otherwise; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but no CUDA device is available")
    return device


def clipping_mode_for(model: nn.Module) -> ClippingMode:
    """``ghost`` if every layer with trainable parameters has a ghost norm sampler and none are shared."""
    norm_samplers = GradSampleModuleFastGradientClipping.NORM_SAMPLERS
    owners: Counter[int] = Counter()
    for module in model.modules():
        params = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if params and type(module) not in norm_samplers:
            return "hooks"
        owners.update(id(p) for p in params)
    return "ghost" if all(count == 1 for count in owners.values()) else "hooks"


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
    ``mode`` overrides the automatic :func:`clipping_mode_for` (for benchmarks); the privacy
    guarantee is the same in both modes.
    """
    check_dp_compatible(model)
    progress = progress if progress is not None else DPSGDProgress()
    n = len(y)
    sample_seed, noise_seed = np.random.SeedSequence(config.seed).generate_state(2)
    inputs = torch.as_tensor(x, dtype=torch.float32, device=device)
    labels = torch.as_tensor(y, dtype=torch.long, device=device)
    model.to(device).train()
    mode = mode or clipping_mode_for(model)

    base = _optimizer(model, config)
    noise = torch.Generator(device=device).manual_seed(int(noise_seed))
    dp_args = {
        "noise_multiplier": config.noise_multiplier,
        "max_grad_norm": config.max_grad_norm,
        "expected_batch_size": config.sample_rate * n,  # the mean is over the EXPECTED batch size
        "loss_reduction": "mean",
        "generator": noise,
    }
    wrapped: GradSampleModule | GradSampleModuleFastGradientClipping
    optimizer: DPOptimizer
    if mode == "ghost":
        wrapped = GradSampleModuleFastGradientClipping(model, max_grad_norm=config.max_grad_norm, loss_reduction="mean")
        optimizer = DPOptimizerFastGradientClipping(base, **dp_args)
        criterion = DPLossFastGradientClipping(wrapped, optimizer, nn.CrossEntropyLoss(), "mean")
    else:
        wrapped = GradSampleModule(model, loss_reduction="mean")
        optimizer = DPOptimizer(base, **dp_args)
        criterion = nn.CrossEntropyLoss()

    def count_step(_: DPOptimizer) -> None:
        progress.steps += 1

    optimizer.attach_step_hook(count_step)
    sampler = UniformWithReplacementSampler(
        num_samples=n,
        sample_rate=config.sample_rate,
        generator=torch.Generator().manual_seed(int(sample_seed)),
        steps=config.steps,
    )
    try:
        with warnings.catch_warnings():
            # Opacus' hooks fire on the first layer, whose input needs no gradient: harmless.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for indices in sampler:
                batch = torch.as_tensor(indices, dtype=torch.long, device=device)
                optimizer.zero_grad()
                loss = criterion(wrapped(inputs[batch]), labels[batch])
                loss.backward()
                optimizer.step()
                progress.sampled_examples += len(indices)
    finally:
        wrapped.cleanup()
    if progress.steps != config.steps:
        raise RuntimeError(f"ran {progress.steps} noisy steps instead of {config.steps}")
    model.eval()
    return DPSGDReport(progress.steps, mode, str(device), n, progress.sampled_examples)


def _optimizer(model: nn.Module, config: DPSGDConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.learning_rate)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.learning_rate)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
