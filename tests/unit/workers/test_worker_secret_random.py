"""The secret source of DP-SGD's sampling and noise: the right laws, independent per instance, no seed to pass."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from scipy import stats

from securemodel.workers import secret_random
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


def test_gaussian_is_the_documented_box_muller_sum_of_keystream_words(monkeypatch: pytest.MonkeyPatch) -> None:
    count, std = 1000, 3.0
    words = np.random.default_rng(7).integers(0, 2**53, size=4 * count, dtype=np.uint64)  # stand-in keystream
    words[[0, 1, 2 * count, 2 * count + 1]] = [0, 2**53 - 1, 0, 2**53 - 1]  # the extremes of u and of the angle
    rng = SecretRandom()
    monkeypatch.setattr(rng, "_words", lambda n: words[:n].copy())
    got = rng.gaussian(count, std, dtype=torch.float64, device=CPU).numpy()
    # The module doc's law, written independently in numpy: u = (k + 1)·2^-53, angle 2π·k'·2^-53, four normals.
    u = (words[: 2 * count].astype(np.float64) + 1.0) * 2.0**-53
    angle = 2 * np.pi * words[2 * count :].astype(np.float64) * 2.0**-53
    pairs = np.sqrt(-2 * np.log(u)) * (np.cos(angle) + np.sin(angle))
    np.testing.assert_allclose(got, (pairs[:count] + pairs[count:]) * std / 2, rtol=1e-12, atol=1e-12)
    assert np.abs(got).max() <= 2 * math.sqrt(2) * math.sqrt(-2 * math.log(2.0**-53)) * std / 2  # |z1 + z2| <= √2·r


def test_draws_never_share_or_repeat_keystream() -> None:
    """Each draw is its own array (the cipher's output buffer is reused), and the keystream runs on across draws
    and across the chunks of one draw: no word of it is used twice."""
    rng = SecretRandom()
    first = rng._words(1000)
    kept = first.copy()
    second = rng._words(secret_random._CHUNK + 1000)  # two cipher calls into the same buffer
    np.testing.assert_array_equal(first, kept)
    assert second.dtype == np.uint64 and int(second.max()) < 2**53
    chunks = [first, second[:1000], second[secret_random._CHUNK : secret_random._CHUNK + 1000]]
    assert len(np.unique(np.concatenate(chunks))) == 3000  # 2^53 values: a repeat by chance has odds ~1e-10


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
