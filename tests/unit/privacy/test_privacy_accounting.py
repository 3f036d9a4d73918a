"""Epsilon of Poisson-sampled DP-SGD against published values and closed forms.

Tolerances are stated per test. "Published" values come from papers or from the
test suites of TF Privacy and Opacus, which pin the outputs of their accountants.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
from scipy import optimize, stats

from securemodel.privacy.accounting import ACCOUNTANTS, dp_sgd_epsilon
from securemodel.privacy.calibration import steps_for_epochs


def moments_accountant_epsilon(q: float, sigma: float, steps: int, delta: float, max_lambda: int = 32) -> float:
    """Abadi et al. (CCS 2016)'s moments accountant, as an independent test oracle.

    The log moment of one step at integer lambda is log A_{lambda+1}, with
    A_a = sum_k C(a, k) (1-q)^(a-k) q^k exp((k^2 - k) / (2 sigma^2)) (Mironov,
    Talwar and Zhang 2019, integer orders); moments add over steps and
    epsilon = min over lambda = 1..32 of (steps * log-moment + log(1/delta)) / lambda.
    """

    def log_a(order: int) -> float:
        terms = [
            math.log(math.comb(order, k))
            + (order - k) * math.log1p(-q)
            + k * math.log(q)
            + (k * k - k) / (2 * sigma**2)
            for k in range(order + 1)
        ]
        top = max(terms)
        return top + math.log(sum(math.exp(term - top) for term in terms))

    return min((steps * log_a(lam + 1) + math.log(1 / delta)) / lam for lam in range(1, max_lambda + 1))


def exact_gaussian_epsilon(mu: float, delta: float) -> float:
    """Exact epsilon of the Gaussian mechanism with sensitivity / sigma = mu at delta.

    Balle and Wang (ICML 2018), Theorem 8: delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2).
    """

    def delta_at(eps: float) -> float:
        return stats.norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * stats.norm.cdf(-eps / mu - mu / 2)

    return optimize.brentq(lambda eps: delta_at(eps) - delta, 0.0, 100.0, xtol=1e-12)


class TestAbadi2016:
    """Abadi et al., "Deep Learning with Differential Privacy", CCS 2016, section 3:
    q = 0.01, sigma = 4, delta = 1e-5, T = 10000 gives epsilon ~ 1.26 with the moments accountant."""

    Q, SIGMA, STEPS, DELTA = 0.01, 4.0, 10_000, 1e-5

    def test_moments_accountant_oracle_reproduces_the_published_1_26(self) -> None:
        assert moments_accountant_epsilon(self.Q, self.SIGMA, self.STEPS, self.DELTA) == pytest.approx(1.26, abs=0.005)

    def test_rdp_is_at_most_the_moments_accountant(self) -> None:
        # dp-accounting's RDP uses more orders and a tighter RDP -> DP conversion.
        rdp = dp_sgd_epsilon(self.SIGMA, self.Q, self.STEPS, self.DELTA, "rdp")
        assert rdp <= moments_accountant_epsilon(self.Q, self.SIGMA, self.STEPS, self.DELTA)
        assert rdp == pytest.approx(1.0355, abs=1e-3)

    def test_prv_is_at_most_rdp(self) -> None:
        prv = dp_sgd_epsilon(self.SIGMA, self.Q, self.STEPS, self.DELTA, "prv")
        assert prv <= dp_sgd_epsilon(self.SIGMA, self.Q, self.STEPS, self.DELTA, "rdp")
        assert prv == pytest.approx(0.947, abs=2e-3)


@pytest.mark.parametrize(
    ("dataset_size", "batch_size", "sigma", "epochs", "delta", "published"),
    [
        (60_000, 150, 1.3, 15, 1e-5, 0.7242234026109595),
        (100_000, 100, 1.0, 30, 1e-7, 1.4154988495444842),
    ],
)
def test_rdp_matches_tf_privacy_compute_dp_sgd_privacy(
    dataset_size: int, batch_size: int, sigma: float, epochs: int, delta: float, published: float
) -> None:
    """TF Privacy, compute_dp_sgd_privacy_test.py (RDP; optimal orders 19 and 13 are in both order grids).

    Tolerance 1e-9 relative: the same RDP code on a different grid of orders.
    """
    steps = steps_for_epochs(epochs, batch_size, dataset_size)
    eps = dp_sgd_epsilon(sigma, batch_size / dataset_size, steps, delta, "rdp")
    assert eps == pytest.approx(published, rel=1e-9)


@pytest.mark.parametrize(("accountant", "published"), [("rdp", 3.2392676), ("prv", 2.4612381)])
def test_matches_tf_privacy_example_privacy(accountant: str, published: float) -> None:
    """TF Privacy, compute_dp_sgd_privacy_test.py, test_compute_dp_sgd_example_privacy without
    microbatching: 1.2 epochs, sigma 0.7, q = 0.01 (120 steps), delta 1e-5, dp-accounting's
    default PLD discretisation. Published to 7 places; tolerance 1e-6."""
    steps = steps_for_epochs(1.2, 100, 10_000)
    assert steps == 120
    assert dp_sgd_epsilon(0.7, 0.01, steps, 1e-5, accountant) == pytest.approx(published, abs=1e-6)


@pytest.mark.parametrize(("accountant", "published"), [("rdp", 1.616), ("prv", 1.199)])
def test_matches_tf_privacy_privacy_statement(accountant: str, published: float) -> None:
    """TF Privacy's privacy statement test: 10000 examples, batch 64, 5 epochs, noise 2.0 with
    microbatching (effective sigma 1.0), delta 1e-6, "assuming Poisson sampling". Printed with
    3 decimals; tolerance 5e-4."""
    steps = steps_for_epochs(5, 64, 10_000)
    assert dp_sgd_epsilon(1.0, 64 / 10_000, steps, 1e-6, accountant) == pytest.approx(published, abs=5e-4)


def test_rdp_matches_opacus_rdp_accountant() -> None:
    """Opacus, opacus/tests/accountants_test.py: sigma 1.5, q 0.04, 2250 steps, delta 1e-5 ->
    7.32911117143. Opacus evaluates fractional-order RDP with its own series; tolerance 1e-4 relative."""
    assert dp_sgd_epsilon(1.5, 0.04, int(90 / 0.04), 1e-5, "rdp") == pytest.approx(7.32911117143, rel=1e-4)


@pytest.mark.parametrize(("sigma", "steps", "delta"), [(3.0, 20, 1e-5), (1.0, 1, 1e-5), (10.0, 400, 1e-6)])
def test_without_subsampling_matches_the_exact_gaussian_mechanism(sigma: float, steps: int, delta: float) -> None:
    """q = 1: T steps compose to one Gaussian mechanism with mu = sqrt(T) / sigma, whose exact epsilon
    is known in closed form. Both accountants are upper bounds; prv is within 1e-3 of the exact value."""
    exact = exact_gaussian_epsilon(math.sqrt(steps) / sigma, delta)
    prv = dp_sgd_epsilon(sigma, 1.0, steps, delta, "prv")
    assert exact - 1e-9 <= prv <= exact + 1e-3
    assert dp_sgd_epsilon(sigma, 1.0, steps, delta, "rdp") >= exact - 1e-9


@pytest.mark.parametrize(
    ("sigma", "q", "steps", "delta"),
    [
        (sigma, q, steps, delta)
        for (sigma, q, steps), delta in zip(
            itertools.product([1.2, 3.0], [0.004, 0.1], [10, 300]), [1e-5, 1e-8] * 4, strict=True
        )
    ],
)
def test_prv_is_at_most_rdp_over_a_grid(sigma: float, q: float, steps: int, delta: float) -> None:
    """The tight accountant never reports more than RDP (both are upper bounds on the same epsilon)."""
    assert dp_sgd_epsilon(sigma, q, steps, delta, "prv") <= dp_sgd_epsilon(sigma, q, steps, delta, "rdp")


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_epsilon_is_monotone_in_each_parameter(accountant: str) -> None:
    base = dp_sgd_epsilon(2.0, 0.02, 200, 1e-5, accountant)
    assert dp_sgd_epsilon(2.5, 0.02, 200, 1e-5, accountant) < base  # more noise
    assert dp_sgd_epsilon(2.0, 0.01, 200, 1e-5, accountant) < base  # smaller batches
    assert dp_sgd_epsilon(2.0, 0.02, 100, 1e-5, accountant) < base  # fewer steps
    assert dp_sgd_epsilon(2.0, 0.02, 200, 1e-4, accountant) < base  # larger delta


@pytest.mark.parametrize("accountant", ACCOUNTANTS)
def test_zero_steps_spend_nothing(accountant: str) -> None:
    assert dp_sgd_epsilon(1.0, 0.1, 0, 1e-5, accountant) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"noise_multiplier": math.inf}, "noise_multiplier"),
        ({"noise_multiplier": math.nan}, "noise_multiplier"),
        ({"sample_rate": 0.0}, "sample_rate"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"steps": -1}, "steps"),
        ({"steps": 1.5}, "steps"),
        ({"steps": True}, "steps"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"accountant": "gdp"}, "accountant"),
    ],
)
def test_invalid_parameters_are_refused_by_name(kwargs: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"noise_multiplier": 1.0, "sample_rate": 0.01, "steps": 10, "delta": 1e-5}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        dp_sgd_epsilon(**arguments)
