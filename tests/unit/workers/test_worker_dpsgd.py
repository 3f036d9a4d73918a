"""DP-SGD honours the operator's σ, q and steps exactly, clips per example, and draws secret noise and batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from securemodel.data.loading import load_dataset, load_evaluation
from securemodel.models import ModelSpec, build_model
from securemodel.workers.dpsgd import (
    ClippingMode,
    DPCompatibilityError,
    DPSGDConfig,
    DPSGDProgress,
    clipping_mode_for,
    train_dp_sgd,
)

torch.set_num_threads(1)  # the unit tests share two cores with everything else

CPU = torch.device("cpu")
MODES: list[ClippingMode] = ["bookkeeping", "opacus-hooks"]


def config(**changes: float | str) -> DPSGDConfig:
    base = {"noise_multiplier": 1.0, "sample_rate": 0.1, "steps": 10, "max_grad_norm": 1.0, "learning_rate": 0.1}
    return DPSGDConfig(**{**base, **changes})  # type: ignore[arg-type]


def toy_data(n: int, features: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, features)).astype(np.float32), rng.integers(0, 2, n)


class BatchRecorder(nn.Module):
    """A linear model that records the size of every batch it is trained on."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, classes)
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        return self.linear(x)


@pytest.mark.parametrize("mode", MODES)
def test_runs_exactly_the_requested_steps_with_poisson_batches_at_rate_q(mode: ClippingMode) -> None:
    n, q, steps = 2000, 0.05, 60
    x, y = toy_data(n)
    model = BatchRecorder(6, 2)
    progress = DPSGDProgress()

    report = train_dp_sgd(model, x, y, config(sample_rate=q, steps=steps), device=CPU, progress=progress, mode=mode)

    assert report.steps == progress.steps == len(model.sizes) == steps
    assert report.clipping_mode == mode and sum(model.sizes) == report.sampled_examples
    # n·steps independent Bernoulli(q) draws: the rate is within 5 standard errors of q ...
    assert abs(report.empirical_sample_rate - q) < 5 * math.sqrt(q * (1 - q) / (n * steps))
    # ... and batch sizes vary like Binomial(n, q), not like fixed-size batches (variance ≈ 95)
    assert 0.4 < np.var(model.sizes, ddof=1) / (n * q * (1 - q)) < 1.8


def test_empty_poisson_batches_still_count_as_noisy_steps() -> None:
    x, y = toy_data(20)
    model = nn.Linear(6, 2)
    before = model.weight.detach().clone()

    report = train_dp_sgd(model, x, y, config(sample_rate=0.005, steps=40), device=CPU)

    assert report.steps == 40 and report.sampled_examples < 20  # most batches were empty
    assert not torch.equal(model.weight, before)  # ... and were still noised


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sigma", [0.5, 2.0])
def test_noise_standard_deviation_is_sigma_times_clip_over_expected_batch(mode: ClippingMode, sigma: float) -> None:
    # All-zero inputs make every example's weight gradient exactly zero, so one SGD step with
    # lr = 1 moves the weights by pure noise: N(0, (σ·C)²) / (q·n) per entry.
    n, q, clip = 500, 0.2, 0.5
    model = nn.Linear(100, 40)
    before = model.weight.detach().clone()
    x, y = np.zeros((n, 100), np.float32), np.zeros(n, np.int64)

    train_dp_sgd(model, x, y, config(noise_multiplier=sigma, sample_rate=q, steps=1, max_grad_norm=clip,
                                     learning_rate=1.0), device=CPU, mode=mode)  # fmt: skip

    step = (model.weight.detach() - before).numpy()
    expected = sigma * clip / (q * n)
    assert step.std() == pytest.approx(expected, rel=0.05)  # 4000 draws: standard error 1.1 %
    assert abs(step.mean()) < 4 * expected / math.sqrt(step.size)


@pytest.mark.parametrize("mode", MODES)
def test_each_example_gradient_is_clipped_to_max_grad_norm(mode: ClippingMode) -> None:
    # q = 1 puts every example in the one batch and σ ≈ 0 removes the noise, so one SGD step with
    # lr = 1 must move the weights by exactly the mean of the per-example gradients, each scaled
    # to norm at most C; large inputs put most gradient norms far above C.
    n, clip = 32, 0.01
    x, y = toy_data(n)
    x[::2] *= 100
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    reference = [p.detach().clone() for p in model.parameters()]
    grads = []
    for i in range(n):
        model.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x[i : i + 1])), torch.tensor(y[i : i + 1])).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    norms = torch.stack(grads).norm(dim=1)
    assert (norms > 10 * clip).sum() >= n // 4
    expected = -torch.stack(
        [g * min(1.0, clip / (norm.item() + 1e-6)) for g, norm in zip(grads, norms, strict=True)]
    ).mean(dim=0)

    train_dp_sgd(model, x, y, config(noise_multiplier=1e-9, sample_rate=1.0, steps=1, max_grad_norm=clip,
                                     learning_rate=1.0), device=CPU, mode=mode)  # fmt: skip

    moved = torch.cat([(p.detach() - r).flatten() for p, r in zip(model.parameters(), reference, strict=True)])
    torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-7)
    assert moved.norm().item() <= clip


@pytest.mark.parametrize("mode", MODES)
def test_identical_runs_draw_different_batches_and_noise(mode: ClippingMode) -> None:
    # Same data, same initial weights, same arguments, even the same global torch seed: the
    # sampling and the noise must still differ, or whoever knows the arguments could replay them.
    x, y = toy_data(200)

    def run() -> tuple[list[int], list[torch.Tensor]]:
        torch.manual_seed(3)
        model = BatchRecorder(6, 2)
        train_dp_sgd(model, x, y, config(steps=15), device=CPU, mode=mode)
        return model.sizes, [p.detach().clone() for p in model.parameters()]

    (sizes, first), (other_sizes, second) = run(), run()
    assert sizes != other_sizes  # 15 Binomial(200, 0.1) batch sizes: equal with probability < 1e-9
    assert not any(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_breast_cancer_at_epsilon_4_is_clearly_better_than_chance() -> None:
    data = load_dataset("builtin://breast_cancer")
    x_val, y_val = load_evaluation("builtin://breast_cancer?part=evaluation", training="builtin://breast_cancer")
    # What the operator calibrates for ε = 4, δ = 1e-5, batchSize 64, 5 epochs on the 456 training
    # examples (PRV accountant: ε = 3.997): q = 64/456, 36 steps, σ = 1.28043.
    dp = DPSGDConfig(noise_multiplier=1.28043, sample_rate=64 / 456, steps=36, max_grad_norm=1.0, learning_rate=0.5)
    assert len(data.y_train) == 456
    torch.manual_seed(0)
    model = build_model(ModelSpec("mlp", params={"hidden": [32]}), data.input_shape, data.num_classes)

    train_dp_sgd(model, data.model_inputs(data.x_train), data.y_train, dp, device=CPU)

    with torch.no_grad():
        predicted = model(torch.from_numpy(data.model_inputs(x_val))).argmax(dim=1).numpy()
    majority = np.bincount(y_val).max() / len(y_val)  # ≈ 0.63
    assert (predicted == y_val).mean() >= max(0.85, majority + 0.2)


class Scaled(nn.Module):
    """A linear layer times a learned scalar: a parameter outside any layer book-keeping supports."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 2)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


def test_book_keeping_where_every_parameter_sits_in_a_supported_layer_and_opacus_elsewhere() -> None:
    assert clipping_mode_for(build_model(ModelSpec("mlp"), (30,), 2)) == "bookkeeping"
    assert clipping_mode_for(build_model(ModelSpec("cnn"), (8, 8), 10)) == "bookkeeping"
    tied = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    tied[1].weight = tied[0].weight
    assert clipping_mode_for(tied) == "opacus-hooks"
    assert clipping_mode_for(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(4, 4, 1, groups=2))) == "opacus-hooks"

    x, y = toy_data(100)
    model = Scaled()
    before = model.scale.detach().clone()
    report = train_dp_sgd(model, x, y, config(steps=3), device=CPU)
    assert report.clipping_mode == "opacus-hooks" and report.steps == 3
    assert not torch.equal(model.scale.detach(), before)


def test_models_that_mix_examples_are_refused_before_training() -> None:
    x, y = toy_data(50)
    progress = DPSGDProgress()
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with pytest.raises(DPCompatibilityError, match="BatchNorm"):
        train_dp_sgd(model, x, y, config(), device=CPU, progress=progress)
    assert progress.steps == 0


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"noise_multiplier": 0.0}, "noise_multiplier"), ({"sample_rate": 1.5}, "sample_rate"), ({"steps": 0}, "steps")],
)
def test_invalid_parameters_are_refused(changes: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**changes)
