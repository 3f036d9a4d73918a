"""Privacy accounting for DP-SGD with Google's ``dp-accounting``.

The mechanism accounted for is DP-SGD as Opacus runs it with Poisson sampling:
at each of ``steps`` iterations every example of the dataset is included in the
batch independently with probability ``q`` (the sample rate); per-example
gradients are clipped to L2 norm ``C`` and summed, and Gaussian noise of
standard deviation ``sigma * C`` is added to the sum (``sigma`` is the noise
multiplier). Every intermediate model may be released.

The guarantee: the whole run of ``steps`` iterations is (epsilon, delta)-
differentially private under the add-or-remove-one-example neighbouring
relation, where ``epsilon`` is the value returned here. Both accountants return
upper bounds on the true epsilon of that mechanism, never estimates from below.

Accountants, named as in ``SecureModel.spec.privacy.accountant``:

``prv``
    The numerical composition of privacy loss distributions. The literature has
    two names for the same method: "privacy random variables" (PRV; Gopi, Lee
    and Wutschitz, NeurIPS 2021, Microsoft's ``prv-accountant``) and "privacy
    loss distributions" (PLD; Meiser and Mohammadi, CCS 2018; Koskela et al.,
    AISTATS 2020). Our API calls it ``prv``; we compute it with
    ``dp_accounting.pld.PLDAccountant``, which discretises the privacy loss of
    the Poisson-subsampled Gaussian with the pessimistic "connect the dots"
    construction (Doroshenko et al., PETS 2022) and composes by FFT. Pessimistic
    discretisation makes the result an upper bound at any discretisation
    interval; a coarser interval only makes it looser. Both the "add" and the
    "remove" direction are composed and the larger epsilon is returned. This is
    the tight accountant and the default.

``rdp``
    Renyi DP of the sampled Gaussian mechanism (Mironov, Talwar and Zhang,
    2019), composed additively over steps, converted to (epsilon, delta)-DP
    with the conversion of Balle et al. (AISTATS 2020, Theorem 21), optimised
    over dp-accounting's default grid of orders. Looser than ``prv`` (it is what
    Abadi et al.'s moments accountant evolved into) and much cheaper.
"""

from __future__ import annotations

import functools
from typing import Final, Literal, get_args

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from securemodel.privacy._checks import require_delta, require_int, require_positive, require_sample_rate

Accountant = Literal["prv", "rdp"]
ACCOUNTANTS: Final[tuple[str, ...]] = get_args(Accountant)
DEFAULT_ACCOUNTANT: Final[Accountant] = "prv"

# dp-accounting's own default; published PLD values (TF Privacy's tests) use it.
# Its cost grows as the noise multiplier shrinks: about 0.1 s at sigma >= 1 and
# a few seconds at sigma = 0.3 for 10^4 steps on one core.
PLD_VALUE_DISCRETIZATION_INTERVAL: Final[float] = 1e-4


def validate_accountant(accountant: str) -> Accountant:
    """Return ``accountant`` if it is one of :data:`ACCOUNTANTS`, else raise ValueError."""
    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}; got {accountant!r}")
    return accountant  # type: ignore[return-value]


def dp_sgd_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = DEFAULT_ACCOUNTANT,
) -> float:
    """Epsilon of ``steps`` iterations of Poisson-sampled DP-SGD, at ``delta``.

    Guarantee: DP-SGD with noise multiplier ``noise_multiplier`` (noise standard
    deviation over clipping norm), Poisson sampling at rate ``sample_rate`` and
    ``steps`` iterations, releasing every iterate, is (epsilon, ``delta``)-DP
    under add-or-remove-one-example adjacency for the returned epsilon, an
    upper bound computed by ``accountant`` (see the module docstring). Zero
    steps give epsilon 0.

    Raises:
        ValueError: if a parameter is out of range or the accountant unknown.
    """
    require_positive("noise_multiplier", noise_multiplier)
    require_sample_rate("sample_rate", sample_rate)
    require_int("steps", steps, minimum=0)
    require_delta("delta", delta)
    accountant = validate_accountant(accountant)
    if steps == 0:
        return 0.0
    return _epsilon(float(noise_multiplier), float(sample_rate), int(steps), float(delta), accountant)


# Caches epsilons only: a composed PLD can take tens of MB.
@functools.lru_cache(maxsize=1024)
def _epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: Accountant) -> float:
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)),
        steps,
    )
    engine: dp_accounting.PrivacyAccountant
    if accountant == "prv":
        engine = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_VALUE_DISCRETIZATION_INTERVAL)
    else:
        engine = rdp_privacy_accountant.RdpAccountant()
    return float(engine.compose(event).get_epsilon(delta))
