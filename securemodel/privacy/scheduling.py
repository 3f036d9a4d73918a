"""Policies that decide which waiting claims on a privacy budget are granted.

Both policies grant all-or-nothing: a claim gets its whole mechanism or
nothing, and it is granted only if the composition of everything the budget
holds with it stays within the policy's ceiling
(:mod:`securemodel.privacy.composition`). Both are work-conserving passes over
the waiting claims in a policy order: a claim that does not fit is skipped, and
later claims that do fit are still granted (it does not block the queue).

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
    until all of it is unlocked; a claim is granted only if the composed
    epsilon with it stays within what is unlocked. Waiting claims are
    considered smallest dominant share first, ties in arrival order, best
    effort (PrivateKube's default, ``grant_top_small = False``).

    The dominant share of a claim is its standalone cost, the epsilon of its
    mechanism alone at the budget's delta, divided by the budget's epsilon;
    not its marginal cost (composed with it minus composed without). PrivateKube
    defines the share as demand over capacity, a property of the claim; the
    marginal cost is not one: it depends on what was granted before and shrinks
    as the budget fills (composition is sublinear), so ordering by it would
    change with every grant of the same pass, favour whoever arrives late, and
    cost a composition per waiting claim per grant. The unlocking and the
    grant test, on the other hand, use the composed cost.

    The unlocked amount is state: the ledger keeps it in
    ``status.epsilonUnlocked`` so that it survives operator restarts. Raising
    ``spec.epsilon`` adds locked budget, which later arrivals unlock (in
    steps of the new epsilon / unlock_steps); lowering it caps the unlocked
    amount.
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
    """A waiting claim as the policies see it: its key and its dominant share."""

    key: str
    share: float


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


def ceiling(policy: Policy, epsilon: float, unlocked: float) -> float:
    """The composed epsilon ``policy`` lets the budget hold: ``epsilon`` (fcfs), ``min(unlocked, epsilon)`` (dpf)."""
    return epsilon if policy == "fcfs" else min(unlocked, epsilon)


def order(policy: Policy, waiting: Sequence[Demand]) -> list[Demand]:
    """``waiting`` (in arrival order) in the order ``policy`` considers them."""
    if policy == "fcfs":
        return list(waiting)
    return sorted(waiting, key=lambda demand: demand.share)  # stable: ties keep arrival order
