"""The ledger rules: all-or-nothing grants, idempotency per uid, the states, and the invariant."""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from fractions import Fraction

import pytest

from securemodel.privacy.claims import (
    BudgetSpec,
    Claim,
    ClaimState,
    Consumer,
    Ledger,
    RejectionReason,
    Totals,
    exact,
    status_fields,
    totals,
)
from securemodel.privacy.ledger import (
    LedgerError,
    Outcome,
    can_set_epsilon,
    commit,
    dispatch,
    mark_started,
    epsilon_floor,
    reconcile,
    release,
    submit,
)
from securemodel.privacy.scheduling import validate_policy

NOW = "2026-11-21T10:00:00Z"
LATER = "2026-11-21T11:00:00Z"
DELTA = 1e-5


def consumer(index: int) -> Consumer:
    return Consumer("SecureModel", "clinic-a", f"m{index}", f"uid-{index}")


def claim_of(ledger: Ledger, uid: str) -> Claim:
    claim = ledger.claim(uid)
    assert claim is not None, uid
    return claim


def submit_all(spec: BudgetSpec, epsilons: list[float], ledger: Ledger | None = None) -> Ledger:
    ledger = ledger or Ledger()
    for index, epsilon in enumerate(epsilons):
        ledger = submit(ledger, spec, consumer(index), epsilon, DELTA, NOW).ledger
    return ledger


def states(ledger: Ledger) -> list[str]:
    return [claim.state.value for claim in ledger.claims]


def kinds(outcome: Outcome) -> list[tuple[str, str]]:
    return [(decision.kind.value, decision.consumer.uid) for decision in outcome.decisions]


class TestGrants:
    def test_twenty_claims_on_a_budget_for_five(self) -> None:
        """The integration scenario of issue 4, on plain data: 5 Reserved, 15 Waiting, in arrival order."""
        ledger = submit_all(BudgetSpec(10.0, DELTA), [2.0] * 20)
        assert states(ledger) == ["Reserved"] * 5 + ["Waiting"] * 15
        assert totals(ledger, BudgetSpec(10.0, DELTA)) == Totals(committed=0.0, reserved=10.0, available=0.0)

    def test_a_claim_is_granted_whole_or_not_at_all(self) -> None:
        spec = BudgetSpec(5.0, DELTA)
        outcome = submit(submit_all(spec, [4.0]), spec, consumer(1), 2.0, DELTA, NOW)
        assert kinds(outcome) == [("Queued", "uid-1")]
        assert claim_of(outcome.ledger, "uid-1").state is ClaimState.WAITING
        assert totals(outcome.ledger, spec).available == 1.0

    def test_decisions_carry_event_reason_and_type(self) -> None:
        spec = BudgetSpec(1.0, DELTA)
        granted = submit(Ledger(), spec, consumer(0), 1.0, DELTA, NOW).decisions[0]
        rejected = submit(Ledger(), spec, consumer(1), 2.0, DELTA, NOW).decisions[0]
        assert (granted.event_reason, granted.event_type) == ("ClaimGranted", "Normal")
        assert (rejected.event_reason, rejected.event_type) == ("ClaimRejected", "Warning")
        assert "m0" in granted.message and "above the budget's whole epsilon" in rejected.message

    def test_sums_are_exact_decimals(self) -> None:
        assert 0.1 + 0.2 > 0.3  # in binary floating point
        spec = BudgetSpec(0.3, DELTA)
        assert states(submit_all(spec, [0.1, 0.2])) == ["Reserved", "Reserved"]
        assert states(submit_all(BudgetSpec(1.0, DELTA), [0.1] * 11)) == ["Reserved"] * 10 + ["Waiting"]

    def test_a_claim_of_the_whole_budget_is_admitted(self) -> None:
        assert states(submit_all(BudgetSpec(3.0, DELTA), [3.0])) == ["Reserved"]


class TestRejections:
    def test_delta_above_the_budget_delta(self) -> None:
        outcome = submit(Ledger(), BudgetSpec(10.0, 1e-6), consumer(0), 1.0, 1e-5, NOW)
        claim = claim_of(outcome.ledger, "uid-0")
        assert (claim.state, claim.reason) == (ClaimState.REJECTED, RejectionReason.DELTA_ABOVE_BUDGET)
        assert kinds(outcome) == [("Rejected", "uid-0")]

    def test_epsilon_above_the_whole_budget(self) -> None:
        claim = claim_of(submit(Ledger(), BudgetSpec(1.0, DELTA), consumer(0), 1.5, DELTA, NOW).ledger, "uid-0")
        assert (claim.state, claim.reason) == (ClaimState.REJECTED, RejectionReason.EPSILON_ABOVE_BUDGET)

    def test_rejected_claims_unlock_nothing_and_hold_nothing(self) -> None:
        spec = BudgetSpec(1.0, DELTA, "dpf", 4)
        ledger = submit(Ledger(), spec, consumer(0), 5.0, DELTA, NOW).ledger
        assert ledger.epsilon_unlocked == 0.0
        assert totals(ledger, spec).available == 1.0

    def test_a_lowered_delta_rejects_waiting_claims(self) -> None:
        ledger = submit_all(BudgetSpec(1.0, DELTA), [1.0, 1.0])
        outcome = reconcile(ledger, BudgetSpec(1.0, 1e-6), LATER)
        assert states(outcome.ledger) == ["Reserved", "Rejected"]
        assert kinds(outcome) == [("Rejected", "uid-1")]

    @pytest.mark.parametrize(("epsilon", "delta"), [(0.0, DELTA), (-1.0, DELTA), (1.0, 0.0), (1.0, 1.0)])
    def test_malformed_claims_are_errors_not_rejections(self, epsilon: float, delta: float) -> None:
        with pytest.raises(ValueError):
            submit(Ledger(), BudgetSpec(1.0, DELTA), consumer(0), epsilon, delta, NOW)


class TestIdempotency:
    def test_resubmitting_returns_the_same_ledger_and_no_decision(self) -> None:
        spec = BudgetSpec(3.0, DELTA, "dpf", 3)
        ledger = submit_all(spec, [1.0, 2.0, 3.0])
        for index, epsilon in enumerate([1.0, 2.0, 3.0]):
            outcome = submit(ledger, spec, consumer(index), epsilon, DELTA, LATER)
            assert outcome == Outcome(ledger)

    def test_the_first_submission_fixes_the_claim(self) -> None:
        spec = BudgetSpec(3.0, DELTA)
        ledger = submit_all(spec, [1.0])
        assert submit(ledger, spec, consumer(0), 2.5, DELTA, LATER).ledger == ledger

    def test_commit_and_release_twice_change_nothing_the_second_time(self) -> None:
        spec = BudgetSpec(3.0, DELTA)
        ledger = submit_all(spec, [1.0, 1.0])
        committed = commit(ledger, spec, "uid-0", LATER).ledger
        assert commit(committed, spec, "uid-0", LATER, epsilon_spent=0.5) == Outcome(committed)
        released = release(committed, spec, "uid-1", LATER).ledger
        assert release(released, spec, "uid-1", LATER) == Outcome(released)
        assert release(released, spec, "uid-unknown", LATER) == Outcome(released)


class TestLifecycle:
    def test_release_before_any_pod_lets_the_next_waiting_claim_through(self) -> None:
        spec = BudgetSpec(2.0, DELTA)
        ledger = submit_all(spec, [2.0, 2.0])
        outcome = release(ledger, spec, "uid-0", LATER)
        assert states(outcome.ledger) == ["Released", "Reserved"]
        assert kinds(outcome) == [("Released", "uid-0"), ("Granted", "uid-1")]
        assert claim_of(outcome.ledger, "uid-1").updated == LATER

    def test_a_waiting_claim_can_be_withdrawn(self) -> None:
        spec = BudgetSpec(1.0, DELTA)
        ledger = submit_all(spec, [1.0, 1.0])
        assert states(release(ledger, spec, "uid-1", LATER).ledger) == ["Reserved", "Released"]

    def test_release_after_a_container_ran_is_refused(self) -> None:
        spec = BudgetSpec(1.0, DELTA)
        ledger = submit_all(spec, [1.0])
        dispatched = dispatch(ledger, "uid-0", LATER).ledger
        assert states(release(dispatched, spec, "uid-0", LATER).ledger) == ["Released"]
        started = mark_started(dispatched, "uid-0", LATER).ledger
        assert claim_of(started, "uid-0").started == LATER
        with pytest.raises(LedgerError, match="ran at"):
            release(started, spec, "uid-0", LATER)
        assert claim_of(commit(started, spec, "uid-0", LATER).ledger, "uid-0").state is ClaimState.COMMITTED

    def test_only_a_reserved_claim_is_dispatched_and_only_a_dispatched_one_starts(self) -> None:
        spec = BudgetSpec(1.0, DELTA)
        ledger = submit_all(spec, [1.0, 1.0])  # Reserved, Waiting
        with pytest.raises(LedgerError, match="Reserved"):
            dispatch(ledger, "uid-1", LATER)
        with pytest.raises(LedgerError, match="never dispatched"):
            mark_started(ledger, "uid-0", LATER)
        once = dispatch(ledger, "uid-0", NOW).ledger
        assert dispatch(once, "uid-0", LATER) == Outcome(once)  # the first time is kept

    def test_committed_privacy_cannot_be_released(self) -> None:
        spec = BudgetSpec(1.0, DELTA)
        ledger = commit(submit_all(spec, [1.0]), spec, "uid-0", LATER).ledger
        with pytest.raises(LedgerError, match="Committed"):
            release(ledger, spec, "uid-0", LATER)

    def test_commit_of_less_than_reserved_frees_the_rest(self) -> None:
        spec = BudgetSpec(2.0, DELTA)
        ledger = submit_all(spec, [2.0, 0.5])
        outcome = commit(ledger, spec, "uid-0", LATER, epsilon_spent=1.5)
        assert kinds(outcome) == [("Committed", "uid-0"), ("Granted", "uid-1")]
        assert totals(outcome.ledger, spec) == Totals(committed=1.5, reserved=0.5, available=0.0)

    @pytest.mark.parametrize("spent", [-0.1, 2.5])
    def test_commit_outside_the_reservation_is_refused(self, spent: float) -> None:
        spec = BudgetSpec(2.0, DELTA)
        with pytest.raises(LedgerError, match="between 0 and"):
            commit(submit_all(spec, [2.0]), spec, "uid-0", LATER, epsilon_spent=spent)

    def test_only_reserved_claims_can_be_committed(self) -> None:
        spec = BudgetSpec(1.0, DELTA)
        ledger = submit_all(spec, [1.0, 1.0, 2.0])
        with pytest.raises(LedgerError, match="Waiting"):
            commit(ledger, spec, "uid-1", LATER)
        with pytest.raises(LedgerError, match="Rejected"):
            commit(ledger, spec, "uid-2", LATER)
        with pytest.raises(LedgerError, match="no claim"):
            commit(ledger, spec, "uid-unknown", LATER)

    def test_raising_epsilon_grants_waiting_claims(self) -> None:
        ledger = submit_all(BudgetSpec(2.0, DELTA), [2.0, 2.0, 2.0])
        outcome = reconcile(ledger, BudgetSpec(5.0, DELTA), LATER)
        assert states(outcome.ledger) == ["Reserved", "Reserved", "Waiting"]
        assert kinds(outcome) == [("Granted", "uid-1")]
        assert reconcile(outcome.ledger, BudgetSpec(5.0, DELTA), LATER) == Outcome(outcome.ledger)


class TestEpsilonChanges:
    def test_epsilon_cannot_go_below_committed_plus_reserved(self) -> None:
        spec = BudgetSpec(10.0, DELTA)
        ledger = commit(submit_all(spec, [3.0, 0.1, 0.2]), spec, "uid-0", LATER).ledger
        assert epsilon_floor(ledger) == pytest.approx(3.3)
        assert can_set_epsilon(ledger, 3.3)  # exactly: 3.0 + 0.1 + 0.2 is 3.3
        assert not can_set_epsilon(ledger, 3.2999)
        assert can_set_epsilon(ledger, 100.0)

    def test_an_empty_ledger_allows_any_positive_epsilon(self) -> None:
        assert can_set_epsilon(Ledger(), 1e-9)
        with pytest.raises(ValueError):
            can_set_epsilon(Ledger(), 0.0)


class TestStatus:
    def test_round_trip_through_status(self) -> None:
        spec = BudgetSpec(1.0, DELTA, "dpf", 3)
        ledger = submit_all(spec, [0.3, 0.3, 5.0, 0.1])
        ledger = commit(ledger, spec, "uid-0", LATER, epsilon_spent=0.25).ledger
        status = status_fields(ledger, spec)
        assert Ledger.from_status(status) == ledger
        assert status["epsilonCommitted"] == 0.25
        assert status["claims"][2]["reason"] == "EpsilonAboveBudget"
        assert "reason" not in status["claims"][0]
        assert set(status) == {"epsilonCommitted", "epsilonReserved", "epsilonAvailable", "epsilonUnlocked", "claims"}

    def test_a_missing_status_is_an_empty_ledger(self) -> None:
        assert Ledger.from_status(None) == Ledger() == Ledger.from_status({})

    def test_spec_from_the_api_object(self) -> None:
        spec = BudgetSpec.from_dict({"epsilon": 10, "delta": 1e-5, "policy": "dpf", "dpf": {"unlockSteps": 4}})
        assert spec == BudgetSpec(10.0, 1e-5, "dpf", 4)
        assert BudgetSpec.from_dict({"epsilon": 1.0, "delta": 1e-5}) == BudgetSpec(1.0, 1e-5, "fcfs", 10)

    @pytest.mark.parametrize(
        "spec",
        [
            {"epsilon": 0, "delta": 1e-5},
            {"epsilon": 1, "delta": 1},
            {"epsilon": 1, "delta": 1e-5, "policy": "rr"},
            {"epsilon": 1, "delta": 1e-5, "dpf": {"unlockSteps": 0}},
        ],
    )
    def test_invalid_specs_are_refused(self, spec: dict) -> None:
        with pytest.raises(ValueError):
            BudgetSpec.from_dict(spec)

    def test_exhausted_when_nothing_is_left(self) -> None:
        spec = BudgetSpec(1.0, DELTA)
        assert totals(submit_all(spec, [1.0]), spec).exhausted
        assert not totals(submit_all(spec, [0.5]), spec).exhausted


FINAL = {ClaimState.COMMITTED, ClaimState.RELEASED, ClaimState.REJECTED}
ALLOWED = {
    ClaimState.WAITING: {ClaimState.WAITING, ClaimState.RESERVED, ClaimState.RELEASED, ClaimState.REJECTED},
    ClaimState.RESERVED: {ClaimState.RESERVED, ClaimState.COMMITTED, ClaimState.RELEASED},
}


@pytest.mark.parametrize("policy", ["fcfs", "dpf"])
@pytest.mark.parametrize("seed", range(4))
def test_invariants_hold_under_random_operations(policy: str, seed: int) -> None:
    """Property-style: 300 random operations from a seeded RNG, with a restart (status round trip)
    after each. After every operation: committed + reserved <= epsilon exactly; no waiting claim
    fits in what the policy may grant; states only move forward; repeating the operation on its
    result changes nothing; forbidden transitions raise LedgerError."""
    rng = random.Random(seed)
    spec = BudgetSpec(rng.choice([1.0, 2.5, 10.0]), DELTA, validate_policy(policy), rng.choice([1, 3, 10]))
    ledger, started = Ledger(), set[str]()
    for step in range(300):
        now = f"t{step}"
        operation = random_operation(rng, ledger, spec, started, now)
        if operation is None:
            continue
        if isinstance(operation, BudgetSpec):
            spec = operation
            operation = functools.partial(reconcile, spec=spec, now=now)
        outcome = operation(ledger)
        restarted = Ledger.from_status(status_fields(outcome.ledger, spec))
        assert restarted == outcome.ledger
        assert operation(restarted) == Outcome(restarted)
        check_invariants(ledger, restarted, spec)
        ledger = restarted


def random_operation(
    rng: random.Random, ledger: Ledger, spec: BudgetSpec, started: set[str], now: str
) -> Callable[[Ledger], Outcome] | BudgetSpec | None:
    """A random transition as a function of the ledger, a new spec, or None (a no-op or a refusal checked here)."""
    uids = [claim.consumer.uid for claim in ledger.claims]
    kind = rng.choice(["submit", "submit", "resubmit", "commit", "release", "start", "epsilon"])
    if kind == "submit" or not uids:
        epsilon = rng.choice([0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 3.0, spec.epsilon * 1.5])
        delta = rng.choice([DELTA, DELTA, 1e-4])
        return functools.partial(submit, spec=spec, consumer=consumer(len(uids)), epsilon=epsilon, delta=delta, now=now)
    claim = claim_of(ledger, rng.choice(uids))
    uid = claim.consumer.uid
    if kind == "resubmit":
        return functools.partial(
            submit, spec=spec, consumer=claim.consumer, epsilon=claim.epsilon, delta=claim.delta, now=now
        )
    if kind == "start":
        if claim.state is ClaimState.RESERVED:
            started.add(uid)
            return lambda ledger: mark_started(dispatch(ledger, uid, now).ledger, uid, now)
        return None
    if kind == "epsilon":
        new = rng.choice([0.5, 1.0, 2.0, 5.0, 10.0, 20.0])
        return BudgetSpec(new, spec.delta, spec.policy, spec.unlock_steps) if can_set_epsilon(ledger, new) else spec
    if kind == "commit":
        if claim.state in (ClaimState.WAITING, ClaimState.RELEASED, ClaimState.REJECTED):
            with pytest.raises(LedgerError):
                commit(ledger, spec, uid, now)
            return None
        spent = rng.choice([None, claim.epsilon / 2])
        return functools.partial(commit, spec=spec, key=uid, now=now, epsilon_spent=spent)
    if claim.state is ClaimState.COMMITTED or (claim.started and claim.state is ClaimState.RESERVED):
        with pytest.raises(LedgerError):
            release(ledger, spec, uid, now)
        return None
    return functools.partial(release, spec=spec, key=uid, now=now)


def check_invariants(before: Ledger, after: Ledger, spec: BudgetSpec) -> None:
    committed = sum((exact(c.epsilon) for c in after.claims if c.state is ClaimState.COMMITTED), Fraction(0))
    reserved = sum((exact(c.epsilon) for c in after.claims if c.state is ClaimState.RESERVED), Fraction(0))
    assert committed + reserved <= exact(spec.epsilon)
    ceiling = exact(spec.epsilon)
    if spec.policy == "dpf":
        ceiling = min(exact(after.epsilon_unlocked), ceiling)
    for claim in after.claims:
        if claim.state is ClaimState.WAITING:
            assert exact(claim.epsilon) > ceiling - committed - reserved  # granted as soon as it fits
            assert claim.delta <= spec.delta and claim.epsilon <= spec.epsilon
    assert [c.consumer for c in after.claims[: len(before.claims)]] == [c.consumer for c in before.claims]
    for old, new in zip(before.claims, after.claims[: len(before.claims)], strict=True):
        if old.state in FINAL:
            assert new == old
        else:
            assert new.state in ALLOWED[old.state]
            if new.state is ClaimState.RESERVED:
                assert new.epsilon == old.epsilon  # all or nothing
    assert exact(after.epsilon_unlocked) >= exact(before.epsilon_unlocked) or after.epsilon_unlocked == spec.epsilon


def test_each_version_of_a_consumer_holds_its_own_claim_and_spends_add_up() -> None:
    spec = BudgetSpec(epsilon=1.0, delta=DELTA)
    v1, v2 = (Consumer("SecureModel", "clinic-a", "m", "uid-m", version) for version in ("v1", "v2"))
    assert (v1.key, v2.key, str(v2)) == ("uid-m/v1", "uid-m/v2", "SecureModel clinic-a/m version v2")
    ledger = submit(Ledger(), spec, v1, 0.6, DELTA, NOW).ledger
    ledger = commit(ledger, spec, v1.key, NOW, 0.5).ledger
    assert submit(ledger, spec, v1, 0.6, DELTA, NOW).ledger == ledger  # the same version claims once
    ledger = submit(ledger, spec, v2, 0.6, DELTA, NOW).ledger
    assert [(c.consumer.version, c.state) for c in ledger.claims_of("uid-m")] == [
        ("v1", ClaimState.COMMITTED),
        ("v2", ClaimState.WAITING),  # 0.5 committed + 0.6 > 1: a new version pays again
    ]
    ledger = submit(release(ledger, spec, v2.key, NOW).ledger, spec,
                    dataclasses.replace(v2, version="v3"), 0.5, DELTA, NOW).ledger  # fmt: skip
    assert claim_of(ledger, "uid-m/v3").state is ClaimState.RESERVED
    assert totals(ledger, spec) == Totals(committed=0.5, reserved=0.5, available=0.0)
    assert Ledger.from_status(status_fields(ledger, spec)) == ledger  # the version survives the round trip
