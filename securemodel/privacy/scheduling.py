"""Policies that decide which waiting claims on a privacy budget are granted.

Both policies grant all-or-nothing: a claim gets its whole epsilon or nothing.
Both are work-conserving passes over the waiting claims in a policy order: a
claim that does not fit in what is left is skipped, and later claims that do
fit are still granted (it does not block the queue).

``fcfs``
    First come, first served, PrivateKube's FCFS baseline (Luo et al., OSDI
    '21): claims in arrival order, all of the budget grantable at once.
    PrivateKube's simulator grants a claim on arrival if it fits and rejects
    it otherwise, so a claim never blocks the ones behind it; here a claim
    that does not fit waits instead (a release or a raised epsilon may let it
    through later), still without blocking the claims behind it. The price:
    a large claim can starve while smaller ones keep arriving, and early
    large claims use up budget that could have served many small ones (in
    the paper's single-block microbenchmark FCFS granted 28 pipelines, DPF
    100).

``dpf``
    Dominant Private block Fairness (PrivateKube, Luo et al., OSDI '21), on a
    single block. The budget starts locked; each arriving claim unlocks
    ``epsilon / unlock_steps`` (PrivateKube's DPF-N with N = unlock_steps)
    until all of it is unlocked. Waiting claims are considered smallest
    dominant share first (on one block: demand / total epsilon, i.e. smallest
    demand first; ties in arrival order) and granted from the unlocked budget
    only, best effort (PrivateKube's default, ``grant_top_small = False``).
    The unlocked amount is state: the ledger keeps it in
    ``status.epsilonUnlocked`` so that it survives operator restarts. Raising
    ``spec.epsilon`` adds locked budget, which later arrivals unlock (in
    steps of the new epsilon / unlock_steps); lowering it caps the unlocked
    amount.

Amounts are :class:`fractions.Fraction` so that sums and comparisons are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal, get_args

Policy = Literal["fcfs", "dpf"]
POLICIES: Final[tuple[str, ...]] = get_args(Policy)


@dataclass(frozen=True)
class Demand:
    """A waiting claim as the policies see it: its key, and how much epsilon."""

    key: str
    epsilon: Fraction


def validate_policy(policy: str) -> Policy:
    """Return ``policy`` if it is one of :data:`POLICIES`, else raise ValueError."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}; got {policy!r}")
    return policy  # type: ignore[return-value]


def unlock_on_arrival(unlocked: Fraction, epsilon: Fraction, unlock_steps: int) -> Fraction:
    """DPF's unlocked epsilon after one more claim arrives: ``min(epsilon, unlocked + epsilon / unlock_steps)``."""
    if unlock_steps < 1:
        raise ValueError(f"unlock_steps must be >= 1; got {unlock_steps}")
    return min(epsilon, unlocked + epsilon / unlock_steps)


def grantable(policy: Policy, epsilon: Fraction, unlocked: Fraction, allocated: Fraction) -> Fraction:
    """Epsilon that ``policy`` may still hand out, given what is committed or reserved (``allocated``).

    ``fcfs``: ``epsilon - allocated``. ``dpf``: ``min(unlocked, epsilon) - allocated``.
    Never negative.
    """
    ceiling = epsilon if policy == "fcfs" else min(unlocked, epsilon)
    return max(Fraction(0), ceiling - allocated)


def select(policy: Policy, waiting: Sequence[Demand], available: Fraction) -> list[str]:
    """UIDs of the waiting claims ``policy`` grants now out of ``available``, in grant order.

    ``waiting`` is in arrival order. The sum of the selected demands never
    exceeds ``available``.
    """
    # float() is monotone, so this sorts by the exact amount (near-ties keep arrival order), fast.
    order = list(waiting) if policy == "fcfs" else sorted(waiting, key=lambda demand: float(demand.epsilon))
    granted: list[str] = []
    for demand in order:
        if demand.epsilon <= available:
            granted.append(demand.key)
            available -= demand.epsilon
    return granted
