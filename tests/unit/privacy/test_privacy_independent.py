"""Our ``prv`` epsilon against an accountant that shares no code with dp-accounting.

Microsoft's ``prv-accountant`` (Gopi, Lee and Wutschitz, NeurIPS 2021) returns a
lower bound, an estimate and an upper bound on the true epsilon of
Poisson-sampled DP-SGD, with the estimate within ``eps_error`` of both. Our
epsilon, itself an upper bound, must lie in that interval.
"""

from __future__ import annotations

import pytest
from prv_accountant.dpsgd import DPSGDAccountant

from securemodel.privacy.accounting import dp_sgd_epsilon

EPS_ERROR = 0.01


@pytest.mark.parametrize(
    ("sigma", "q", "steps", "delta"),
    [
        (1.0, 64 / 455, 143, 1e-5),
        (0.8, 0.001, 1_000, 1e-6),
        (4.0, 0.01, 10_000, 1e-5),
        (3.0, 1.0, 20, 1e-5),
    ],
)
def test_prv_lies_within_microsofts_prv_accountant_bounds(sigma: float, q: float, steps: int, delta: float) -> None:
    lower, estimate, upper = DPSGDAccountant(
        noise_multiplier=sigma, sampling_probability=q, max_steps=steps, eps_error=EPS_ERROR, delta_error=delta / 1000
    ).compute_epsilon(delta=delta, num_steps=steps)
    ours = dp_sgd_epsilon(sigma, q, steps, delta, "prv")
    assert lower <= ours <= upper
    assert ours == pytest.approx(estimate, abs=EPS_ERROR)
