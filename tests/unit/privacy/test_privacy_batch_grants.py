"""Granting claims in runs and batches: exactly what the one-by-one rule grants, at O(log k) compositions.

The reference below is the rule as :mod:`securemodel.privacy.ledger` stated it before runs and
batches: each submit appends its claim and runs a pass that tries every waiting claim in the
policy's order, one composition per claim, skipping a mechanism that did not fit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import replace

import pytest

from securemodel.privacy import ledger as ledger_rules
from securemodel.privacy.claims import BudgetSpec, Claim, ClaimState, Consumer, Ledger, RejectionReason, exact, held
from securemodel.privacy.composition import cache_clear, composed_epsilon, merged, multiset, standalone_epsilon
from securemodel.privacy.ledger import DecisionKind, Submission, reconcile, release, submit, submit_all
from securemodel.privacy.mechanisms import DpSgd, EpsilonDelta, Mechanism
from securemodel.privacy.scheduling import Demand, ceiling, order, unlock_on_arrival, validate_policy

NOW = "2026-11-27T07:00:00Z"
BUDGET_DELTA = 1e-5
# Cheap to compose (few steps), different enough to give runs of different costs.
MECHANISMS: tuple[Mechanism, ...] = (
    DpSgd(2.0, 0.05, 2),
    DpSgd(1.2, 0.1, 1),
    DpSgd(3.0, 0.2, 3),
    EpsilonDelta(0.3, 1e-8),
    EpsilonDelta(0.05, 1e-9),
)


def consumer(index: int) -> Consumer:
    return Consumer("SecureModel", "clinic", f"m{index}", f"uid-{index}")


def submission(index: int, mechanism: Mechanism) -> Submission:
    delta = mechanism.delta if isinstance(mechanism, EpsilonDelta) else BUDGET_DELTA
    return Submission(consumer(index), 1.0, delta, mechanism)


def reference_pass(ledger: Ledger, spec: BudgetSpec, granted: list[str]) -> Ledger:
    """The old pass: rejects the waiting claims that cost more alone than the whole budget, then tries
    every other waiting claim in policy order, one composition each; appends to ``granted``."""
    claims = list(ledger.claims)
    for index, claim in enumerate(claims):
        if claim.state is ClaimState.WAITING and standalone_epsilon(claim.mechanism, spec.delta) > spec.epsilon:
            claims[index] = replace(claim, state=ClaimState.REJECTED, reason=RejectionReason.EPSILON_ABOVE_BUDGET)
    waiting = {c.consumer.key: i for i, c in enumerate(claims) if c.state is ClaimState.WAITING}
    demands = [Demand(k, standalone_epsilon(claims[i].mechanism, spec.delta) / spec.epsilon) for k, i in waiting.items()]
    ledger = replace(ledger, claims=tuple(claims))
    base, limit, too_big = held(ledger), ceiling(spec.policy, spec.epsilon, ledger.epsilon_unlocked), set()
    for demand in order(spec.policy, demands):
        claim = claims[waiting[demand.key]]
        if claim.mechanism in too_big:
            continue
        candidate = merged(base, ((claim.mechanism, 1),))
        if composed_epsilon(candidate, spec.delta) > limit:
            too_big.add(claim.mechanism)
            continue
        base = candidate
        claims[waiting[demand.key]] = replace(claim, state=ClaimState.RESERVED, updated=NOW)
        granted.append(demand.key)
    return replace(ledger, claims=tuple(claims))


def reference_submits(ledger: Ledger, spec: BudgetSpec, submissions: Sequence[Submission]) -> tuple[Ledger, list[str]]:
    """The old submits, one after another: the ledger and the keys granted, in the order granted."""
    granted: list[str] = []
    for s in submissions:
        if ledger.claim(s.consumer.key) is not None:
            continue
        claim = Claim(s.consumer, s.epsilon, s.delta, ClaimState.WAITING, NOW, mechanism=s.mechanism)  # type: ignore[arg-type]
        if standalone_epsilon(claim.mechanism, spec.delta) > spec.epsilon:
            rejected = replace(claim, state=ClaimState.REJECTED, reason=RejectionReason.EPSILON_ABOVE_BUDGET)
            ledger = replace(ledger, claims=(*ledger.claims, rejected))
            continue
        unlocked = unlock_on_arrival(exact(ledger.epsilon_unlocked), exact(spec.epsilon), spec.unlock_steps)
        ledger = replace(ledger, claims=(*ledger.claims, claim), epsilon_unlocked=float(unlocked))
        ledger = reference_pass(ledger, spec, granted)
    return ledger, granted


def random_batch(rng: random.Random, size: int, start: int = 0) -> list[Submission]:
    """Claims in runs: each next claim keeps the previous one's mechanism with probability 0.8."""
    mechanism, batch = rng.choice(MECHANISMS), []
    for index in range(start, start + size):
        if rng.random() > 0.8:
            mechanism = rng.choice(MECHANISMS)
        batch.append(submission(index, mechanism))
    return batch


def random_spec(rng: random.Random, batch: Sequence[Submission]) -> BudgetSpec:
    """A budget that holds between a fifth and nine tenths of the batch composed: its ceiling cuts runs."""
    everything = composed_epsilon(multiset(s.mechanism for s in batch), BUDGET_DELTA)  # type: ignore[misc]
    epsilon = everything * rng.uniform(0.2, 0.9)
    return BudgetSpec(epsilon, BUDGET_DELTA, validate_policy(rng.choice(["fcfs", "dpf"])), rng.choice([1, 3, 10]))


def reserved(ledger: Ledger) -> set[str]:
    return {claim.consumer.key for claim in ledger.claims if claim.state is ClaimState.RESERVED}


def final_kind(claim: Claim) -> DecisionKind:
    return {ClaimState.RESERVED: DecisionKind.GRANTED, ClaimState.WAITING: DecisionKind.QUEUED,
            ClaimState.REJECTED: DecisionKind.REJECTED}[claim.state]  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_a_batch_grants_exactly_what_the_one_by_one_submits_grant(seed: int) -> None:
    """Random batches in runs of one mechanism, fcfs and dpf (unlocking over 1, 3 or 10 arrivals),
    on a ledger that already holds and queues claims, with a ceiling that cuts runs, a claim no
    budget admits and a resubmission: the same ledger, and one decision per new claim with its
    final state (a claim granted later in the batch is not also Queued)."""
    rng = random.Random(seed)
    first = random_batch(rng, rng.randint(1, 12))
    second = random_batch(rng, rng.randint(10, 40), start=len(first))
    spec = random_spec(rng, [*first, *second])
    second.insert(rng.randrange(len(second) + 1), submission(999, EpsilonDelta(spec.epsilon * 1.5, 1e-9)))
    second.insert(rng.randrange(len(second) + 1), first[0])
    cache_clear()
    expected, _ = reference_submits(Ledger(), spec, [*first, *second])
    cache_clear()
    stored = submit_all(Ledger(), spec, first, NOW)[-1].ledger
    outcomes = submit_all(stored, spec, second, NOW)
    assert all(outcome.ledger == expected for outcome in outcomes)
    assert ("uid-999", ClaimState.REJECTED) in [(c.consumer.key, c.state) for c in expected.claims]
    assert 0 < len(reserved(expected)) < len(expected.claims)
    decided = sorted((d.consumer.key, d.kind) for outcome in outcomes for d in outcome.decisions)
    new = [c for c in expected.claims if stored.claim(c.consumer.key) is None]
    let_through = [(c.consumer.key, DecisionKind.GRANTED) for c in stored.claims
                   if c.state is ClaimState.WAITING and c.consumer.key in reserved(expected)]  # fmt: skip
    assert decided == sorted([(c.consumer.key, final_kind(c)) for c in new] + let_through)
    assert outcomes[second.index(first[0])].decisions == ()  # the resubmission


@pytest.mark.parametrize("seed", range(8))
def test_a_pass_grants_what_the_one_by_one_pass_grants_in_the_same_order(seed: int) -> None:
    """A pass over many waiting claims (as a raised epsilon or a release runs it) grants the same claims in the
    same order as trying them one at a time."""
    rng = random.Random(seed)
    batch = random_batch(rng, rng.randint(5, 40))
    spec = random_spec(rng, batch)
    claims = [Claim(s.consumer, s.epsilon, s.delta, ClaimState.WAITING, NOW, mechanism=s.mechanism) for s in batch]  # type: ignore[arg-type]
    for index in rng.sample(range(len(claims)), len(claims) // 5):
        claims[index] = replace(claims[index], state=ClaimState.RESERVED)
    ledger = Ledger(tuple(claims), epsilon_unlocked=spec.epsilon * rng.uniform(0.3, 1.0))
    cache_clear()
    granted: list[str] = []
    expected = reference_pass(ledger, spec, granted)
    cache_clear()
    outcome = reconcile(ledger, spec, NOW)
    assert outcome.ledger == expected
    assert [d.consumer.key for d in outcome.decisions if d.kind is DecisionKind.GRANTED] == granted


class TestCost:
    """Compositions the grant tests make, counted where the ledger rules call them."""

    RUN = 256
    MECHANISM = DpSgd(2.0, 0.05, 2)

    def counted(self, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        calls: list[int] = []

        def counting(mechanisms: tuple[tuple[Mechanism, int], ...], delta: float) -> float:
            calls.append(sum(count for _, count in mechanisms))
            return composed_epsilon(mechanisms, delta)

        monkeypatch.setattr(ledger_rules, "composed_epsilon", counting)
        return calls

    def batch(self) -> list[Submission]:
        return [submission(index, self.MECHANISM) for index in range(self.RUN)]

    def test_a_run_that_fits_costs_one_composition(self, monkeypatch: pytest.MonkeyPatch) -> None:
        calls = self.counted(monkeypatch)
        outcomes = submit_all(Ledger(), BudgetSpec(100.0, BUDGET_DELTA), self.batch(), NOW)
        assert len(reserved(outcomes[-1].ledger)) == self.RUN
        assert len(calls) <= 2  # the first arrival's pass, then the other 255 together
        assert "(after granting 255 claims together)" in outcomes[-1].decisions[0].message

    def test_a_run_cut_by_the_ceiling_costs_logarithmically_many(self, monkeypatch: pytest.MonkeyPatch) -> None:
        fits = 100
        cut = [composed_epsilon(((self.MECHANISM, count),), BUDGET_DELTA) for count in (fits, fits + 1)]
        spec = BudgetSpec(sum(cut) / 2, BUDGET_DELTA)
        calls = self.counted(monkeypatch)
        outcomes = submit_all(Ledger(), spec, self.batch(), NOW)
        assert len(reserved(outcomes[-1].ledger)) == fits
        assert [c.state for c in outcomes[-1].ledger.claims] == [ClaimState.RESERVED] * fits + [ClaimState.WAITING] * (
            self.RUN - fits
        )
        grants = len(calls) - 1  # the Queued messages compose once per mechanism
        assert grants <= 2 * math.log2(self.RUN) + 2
        calls.clear()
        ledger = Ledger()
        for s in self.batch():  # one submit at a time: a composition per claim
            ledger = submit(ledger, spec, s.consumer, s.epsilon, s.delta, NOW, mechanism=s.mechanism).ledger
        assert ledger == outcomes[-1].ledger
        assert len(calls) > fits

    def test_a_release_lets_a_waiting_run_through_at_logarithmic_cost(self, monkeypatch: pytest.MonkeyPatch) -> None:
        spec = BudgetSpec(composed_epsilon(((self.MECHANISM, self.RUN),), BUDGET_DELTA) + 1.0, BUDGET_DELTA)
        ledger = submit(Ledger(), spec, consumer(-1), spec.epsilon, 1e-9, NOW).ledger  # the whole budget
        ledger = submit_all(ledger, spec, self.batch(), NOW)[-1].ledger
        assert reserved(ledger) == {"uid--1"}
        calls = self.counted(monkeypatch)
        outcome = release(ledger, spec, "uid--1", NOW)
        assert len(reserved(outcome.ledger)) == self.RUN
        assert len(calls) == 1
