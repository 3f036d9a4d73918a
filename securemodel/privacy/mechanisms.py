"""What a ledger entry released, as a mechanism the budget can compose.

``DpSgd``
    ``steps`` iterations of Poisson-sampled DP-SGD with noise multiplier
    ``noise_multiplier`` and sample rate ``sample_rate`` (see
    :mod:`securemodel.privacy.accounting`): the budget composes its exact
    privacy loss distribution.
``EpsilonDelta``
    Anything else that is (``epsilon``, ``delta``)-DP and nothing more is known
    about it; composed as the worst mechanism with that guarantee (see
    :mod:`securemodel.privacy.composition`).

Both are immutable, hashable and ordered by :func:`sort_key`, so a multiset of
them can key a cache. In the status they are written with camelCase keys and a
``type`` field; an entry written before mechanisms existed has none and reads as
the ``EpsilonDelta`` of its own epsilon and delta.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from securemodel.privacy._checks import is_number, require_int, require_sample_rate

DP_SGD: Final = "DPSGD"
EPSILON_DELTA: Final = "EpsilonDelta"


@dataclass(frozen=True)
class DpSgd:
    """``steps`` iterations of Poisson-sampled DP-SGD (noise multiplier, sample rate); 0 steps release nothing."""

    noise_multiplier: float
    sample_rate: float
    steps: int

    def __post_init__(self) -> None:
        if not is_number(self.noise_multiplier) or not self.noise_multiplier > 0:
            raise ValueError(f"noiseMultiplier must be a number > 0; got {self.noise_multiplier!r}")
        require_sample_rate("sampleRate", self.sample_rate)
        require_int("steps", self.steps, minimum=0)
        object.__setattr__(self, "noise_multiplier", float(self.noise_multiplier))
        object.__setattr__(self, "sample_rate", float(self.sample_rate))
        object.__setattr__(self, "steps", int(self.steps))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": DP_SGD,
            "noiseMultiplier": self.noise_multiplier,
            "sampleRate": self.sample_rate,
            "steps": self.steps,
        }


@dataclass(frozen=True)
class EpsilonDelta:
    """A mechanism known only to be (``epsilon``, ``delta``)-DP."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not is_number(self.epsilon) or not 0 <= self.epsilon < float("inf"):
            raise ValueError(f"epsilon must be a finite number >= 0; got {self.epsilon!r}")
        if not is_number(self.delta) or not 0 <= self.delta < 1:
            raise ValueError(f"delta must be in [0, 1); got {self.delta!r}")
        object.__setattr__(self, "epsilon", float(self.epsilon))
        object.__setattr__(self, "delta", float(self.delta))

    def to_dict(self) -> dict[str, Any]:
        return {"type": EPSILON_DELTA, "epsilon": self.epsilon, "delta": self.delta}


Mechanism = DpSgd | EpsilonDelta


def mechanism_from_dict(data: Mapping[str, Any]) -> Mechanism:
    """Read a mechanism written by ``to_dict``.

    Raises:
        ValueError: for an unknown ``type`` or a parameter out of range.
    """
    kind = data.get("type")
    if kind == DP_SGD:
        return DpSgd(float(data["noiseMultiplier"]), float(data["sampleRate"]), int(data["steps"]))
    if kind == EPSILON_DELTA:
        return EpsilonDelta(float(data["epsilon"]), float(data["delta"]))
    raise ValueError(f"unknown mechanism type {kind!r}; expected {DP_SGD} or {EPSILON_DELTA}")


def sort_key(mechanism: Mechanism) -> tuple[str, float, float, int]:
    """A total order over mechanisms of both kinds (for canonical multisets)."""
    if isinstance(mechanism, DpSgd):
        return (DP_SGD, mechanism.noise_multiplier, mechanism.sample_rate, mechanism.steps)
    return (EPSILON_DELTA, mechanism.epsilon, mechanism.delta, 0)


def spends_at_most(spent: Mechanism, reserved: Mechanism) -> bool:
    """Whether ``spent`` releases no more than ``reserved``, whatever it is composed with.

    True for the same DP-SGD run stopped early (same noise multiplier and sample
    rate, no more steps: a prefix of the reserved run, which is post-processing
    of it) and for an (epsilon, delta) pair with neither parameter larger. Any
    other pair is not comparable in general, so False.
    """
    if isinstance(spent, DpSgd) and isinstance(reserved, DpSgd):
        return (
            spent.noise_multiplier == reserved.noise_multiplier
            and spent.sample_rate == reserved.sample_rate
            and spent.steps <= reserved.steps
        )
    if isinstance(spent, EpsilonDelta) and isinstance(reserved, EpsilonDelta):
        return spent.epsilon <= reserved.epsilon and spent.delta <= reserved.delta
    return False
