"""The secret source of DP-SGD's sampling and noise: the right laws, independent per instance, no seed to pass."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from scipy import stats

from securemodel.workers.secret_random import SecretRandom

CPU = torch.device("cpu")


def test_nothing_can_seed_or_reveal_it() -> None:
    assert list(inspect.signature(SecretRandom).parameters) == []
    assert not [name for name in vars(SecretRandom()) if "key" in name.lower() or "seed" in name.lower()]


def test_two_instances_draw_independent_streams() -> None:
    a, b = SecretRandom(), SecretRandom()
    assert not torch.equal(
        a.gaussian(64, 1.0, dtype=torch.float64, device=CPU), b.gaussian(64, 1.0, dtype=torch.float64, device=CPU)
    )
    assert not np.array_equal(a.poisson_sample(1000, 0.5), b.poisson_sample(1000, 0.5))


def test_gaussian_has_mean_zero_the_requested_std_and_normal_tails() -> None:
    draws = SecretRandom().gaussian(200_000, 3.0, dtype=torch.float64, device=CPU).numpy()
    # 200 000 draws: standard errors 0.0067 (mean), 0.16 % (std); the KS test rejects at 1e-4 only
    assert abs(draws.mean()) < 5 * 3.0 / math.sqrt(draws.size)
    assert draws.std() == pytest.approx(3.0, rel=0.01)
    assert stats.kstest(draws / 3.0, "norm").pvalue > 1e-4
    assert stats.kurtosis(draws) == pytest.approx(0.0, abs=0.1)


def test_gaussian_is_rounded_to_the_parameter_dtype() -> None:
    noise = SecretRandom().gaussian(10, 1.0, dtype=torch.float32, device=CPU)
    assert noise.dtype == torch.float32 and noise.shape == (10,)


@pytest.mark.parametrize("q", [0.01, 0.3, 0.999])
def test_poisson_sample_includes_each_index_independently_with_probability_q(q: float) -> None:
    rng, n, rounds = SecretRandom(), 2000, 50
    counts = np.zeros(n)
    sizes = []
    for _ in range(rounds):
        sample = rng.poisson_sample(n, q)
        assert np.all(np.diff(sample) > 0) and (len(sample) == 0 or 0 <= sample[0] and sample[-1] < n)
        counts[sample] += 1
        sizes.append(len(sample))
    total = n * rounds
    assert abs(counts.sum() / total - q) < 5 * math.sqrt(q * (1 - q) / total)
    # Every index is drawn Binomial(rounds, q) times: the histogram of the counts over the n indices fits that
    # distribution (a chi-square goodness of fit, adjacent counts pooled until each bin expects >= 5 indices).
    observed = np.bincount(counts.astype(int), minlength=rounds + 1).astype(float)
    expected = n * stats.binom.pmf(np.arange(rounds + 1), rounds, q)
    bins_observed, bins_expected, pending = [], [], [0.0, 0.0]
    for seen, wanted in zip(observed, expected):
        pending = [pending[0] + seen, pending[1] + wanted]
        if pending[1] >= 5:
            bins_observed.append(pending[0])
            bins_expected.append(pending[1])
            pending = [0.0, 0.0]
    bins_observed[-1] += pending[0]
    bins_expected[-1] += pending[1]
    assert len(bins_expected) >= 2
    _, p_value = stats.chisquare(bins_observed, bins_expected)
    assert p_value > 1e-4


def test_poisson_sample_edges() -> None:
    rng = SecretRandom()
    assert np.array_equal(rng.poisson_sample(100, 1.0), np.arange(100))
    assert len(rng.poisson_sample(100, 0.0)) == 0
    assert len(rng.poisson_sample(0, 0.5)) == 0
