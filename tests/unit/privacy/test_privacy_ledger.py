"""The ledger rules: all-or-nothing grants, idempotency per uid, the states, and the invariant.

Claims here are generic (epsilon, delta) entries at a per-claim delta of 1e-8 on budgets of
delta 1e-5, so their deltas never exhaust the budget's lifetime delta and basic composition
(the plain sum of epsilons) is the bound that binds: the figures are the exact decimal sums.
The composition of DP-SGD entries is tested in test_privacy_composition.py.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable

import pytest

from securemodel.privacy.chain import check_transition, verify
from securemodel.privacy.claims import (
    BudgetSpec,
    Claim,
    ClaimState,
    Consumer,
    Ledger,
    RejectionReason,
    Totals,
    exact,
    held,
    totals,
)
from securemodel.privacy.composition import composed_epsilon, merged
from securemodel.privacy.ledger import (
    LedgerError,
    Outcome,
    can_set_epsilon,
    commit,
    dispatch,
    epsilon_floor,
    mark_started,
    reconcile,
    release,
    submit,
)
from securemodel.privacy.scheduling import validate_policy
from securemodel.privacy.status import status_fields

NOW = "2026-11-21T10:00:00Z"
LATER = "2026-11-21T11:00:00Z"
DELTA = 1e-8  # each claim's
BUDGET_DELTA = 1e-5


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


def approx_totals(committed: float, reserved: float, available: float, summed: float, delta: float) -> Totals:
    """Totals whose composed figures match within 1e-4: the randomized-response composition of many
    small-delta claims charges a hair less than their sum (never more: basic composition bounds it)."""
    close = functools.partial(pytest.approx, abs=1e-4)
    return Totals(close(committed), close(reserved), close(available), summed, delta)  # type: ignore[arg-type]


def states(ledger: Ledger) -> list[str]:
    return [claim.state.value for claim in ledger.claims]


def kinds(outcome: Outcome) -> list[tuple[str, str]]:
    return [(decision.kind.value, decision.consumer.uid) for decision in outcome.decisions]


class TestGrants:
    def test_twenty_claims_on_a_budget_for_five(self) -> None:
        """The integration scenario of issue 4, on plain data: 5 Reserved, 15 Waiting, in arrival order."""
        ledger = submit_all(BudgetSpec(10.0, BUDGET_DELTA), [2.0] * 20)
        assert states(ledger) == ["Reserved"] * 5 + ["Waiting"] * 15
        assert totals(ledger, BudgetSpec(10.0, BUDGET_DELTA)) == approx_totals(0.0, 10.0, 0.0, 10.0, 5e-8)

    def test_a_budget_sharing_data_with_another_grants_nothing_until_disjoint(self) -> None:
        spec = BudgetSpec(10.0, BUDGET_DELTA)
        shared = submit_all(dataclasses.replace(spec, overlaps=("other",)), [2.0, 2.0])
        assert states(shared) == ["Waiting", "Waiting"]
        assert states(reconcile(shared, dataclasses.replace(spec, overlaps=("other",)), LATER).ledger) == ["Waiting", "Waiting"]
        assert states(reconcile(shared, spec, LATER).ledger) == ["Reserved", "Reserved"]

    def test_a_claim_is_granted_whole_or_not_at_all(self) -> None:
        spec = BudgetSpec(5.0, BUDGET_DELTA)
        outcome = submit(submit_all(spec, [4.0]), spec, consumer(1), 2.0, DELTA, NOW)
        assert kinds(outcome) == [("Queued", "uid-1")]
        assert claim_of(outcome.ledger, "uid-1").state is ClaimState.WAITING
        assert totals(outcome.ledger, spec).available == pytest.approx(1.0, abs=1e-4)

    def test_decisions_carry_event_reason_and_type(self) -> None:
        spec = BudgetSpec(1.0, BUDGET_DELTA)
        granted = submit(Ledger(), spec, consumer(0), 1.0, DELTA, NOW).decisions[0]
        rejected = submit(Ledger(), spec, consumer(1), 2.0, DELTA, NOW).decisions[0]
        assert (granted.event_reason, granted.event_type) == ("ClaimGranted", "Normal")
        assert (rejected.event_reason, rejected.event_type) == ("ClaimRejected", "Warning")
        assert "m0" in granted.message and "above the budget's whole epsilon" in rejected.message

    def test_sums_are_exact_decimals(self) -> None:
        assert 0.1 + 0.2 > 0.3  # in binary floating point
        spec = BudgetSpec(0.3, BUDGET_DELTA)
        assert states(submit_all(spec, [0.1, 0.2])) == ["Reserved", "Reserved"]
        assert states(submit_all(BudgetSpec(1.0, BUDGET_DELTA), [0.1] * 11)) == ["Reserved"] * 10 + ["Waiting"]

    def test_a_claim_of_the_whole_budget_is_admitted(self) -> None:
        assert states(submit_all(BudgetSpec(3.0, BUDGET_DELTA), [3.0])) == ["Reserved"]


class TestRejections:
    def test_delta_above_the_budget_delta(self) -> None:
        outcome = submit(Ledger(), BudgetSpec(10.0, 1e-6), consumer(0), 1.0, 1e-5, NOW)
        claim = claim_of(outcome.ledger, "uid-0")
        assert (claim.state, claim.reason) == (ClaimState.REJECTED, RejectionReason.DELTA_ABOVE_BUDGET)
        assert kinds(outcome) == [("Rejected", "uid-0")]

    def test_epsilon_above_the_whole_budget(self) -> None:
        claim = claim_of(submit(Ledger(), BudgetSpec(1.0, BUDGET_DELTA), consumer(0), 1.5, DELTA, NOW).ledger, "uid-0")
        assert (claim.state, claim.reason) == (ClaimState.REJECTED, RejectionReason.EPSILON_ABOVE_BUDGET)

    def test_rejected_claims_unlock_nothing_and_hold_nothing(self) -> None:
        spec = BudgetSpec(1.0, BUDGET_DELTA, "dpf", 4)
        ledger = submit(Ledger(), spec, consumer(0), 5.0, DELTA, NOW).ledger
        assert ledger.epsilon_unlocked == 0.0
        assert totals(ledger, spec).available == pytest.approx(1.0, abs=1e-4)

    def test_a_lowered_delta_rejects_waiting_claims(self) -> None:
        ledger = submit_all(BudgetSpec(1.0, BUDGET_DELTA), [1.0, 1.0])
        outcome = reconcile(ledger, BudgetSpec(1.0, 1e-9), LATER)  # below the claims' 1e-8
        assert states(outcome.ledger) == ["Reserved", "Rejected"]
        assert kinds(outcome) == [("Rejected", "uid-1")]

    @pytest.mark.parametrize(("epsilon", "delta"), [(0.0, DELTA), (-1.0, DELTA), (1.0, 0.0), (1.0, 1.0)])
    def test_malformed_claims_are_errors_not_rejections(self, epsilon: float, delta: float) -> None:
        with pytest.raises(ValueError):
            submit(Ledger(), BudgetSpec(1.0, BUDGET_DELTA), consumer(0), epsilon, delta, NOW)


class TestIdempotency:
    def test_resubmitting_returns_the_same_ledger_and_no_decision(self) -> None:
        spec = BudgetSpec(3.0, BUDGET_DELTA, "dpf", 3)
        ledger = submit_all(spec, [1.0, 2.0, 3.0])
        for index, epsilon in enumerate([1.0, 2.0, 3.0]):
            outcome = submit(ledger, spec, consumer(index), epsilon, DELTA, LATER)
            assert outcome == Outcome(ledger)

    def test_the_first_submission_fixes_the_claim(self) -> None:
        spec = BudgetSpec(3.0, BUDGET_DELTA)
        ledger = submit_all(spec, [1.0])
        assert submit(ledger, spec, consumer(0), 2.5, DELTA, LATER).ledger == ledger

    def test_commit_and_release_twice_change_nothing_the_second_time(self) -> None:
        spec = BudgetSpec(3.0, BUDGET_DELTA)
        ledger = submit_all(spec, [1.0, 1.0])
        committed = commit(ledger, spec, "uid-0", LATER).ledger
        assert commit(committed, spec, "uid-0", LATER, epsilon_spent=0.5) == Outcome(committed)
        released = release(committed, spec, "uid-1", LATER).ledger
        assert release(released, spec, "uid-1", LATER) == Outcome(released)
        assert release(released, spec, "uid-unknown", LATER) == Outcome(released)


class TestLifecycle:
    def test_release_before_any_pod_lets_the_next_waiting_claim_through(self) -> None:
        spec = BudgetSpec(2.0, BUDGET_DELTA)
        ledger = submit_all(spec, [2.0, 2.0])
        outcome = release(ledger, spec, "uid-0", LATER)
        assert states(outcome.ledger) == ["Released", "Reserved"]
        assert kinds(outcome) == [("Released", "uid-0"), ("Granted", "uid-1")]
        assert claim_of(outcome.ledger, "uid-1").updated == LATER

    def test_a_waiting_claim_can_be_withdrawn(self) -> None:
        spec = BudgetSpec(1.0, BUDGET_DELTA)
        ledger = submit_all(spec, [1.0, 1.0])
        assert states(release(ledger, spec, "uid-1", LATER).ledger) == ["Reserved", "Released"]

    def test_release_after_a_container_ran_is_refused(self) -> None:
        spec = BudgetSpec(1.0, BUDGET_DELTA)
        ledger = submit_all(spec, [1.0])
        dispatched = dispatch(ledger, "uid-0", LATER).ledger
        assert states(release(dispatched, spec, "uid-0", LATER).ledger) == ["Released"]
        started = mark_started(dispatched, "uid-0", LATER).ledger
        assert claim_of(started, "uid-0").started == LATER
        with pytest.raises(LedgerError, match="ran at"):
            release(started, spec, "uid-0", LATER)
        assert claim_of(commit(started, spec, "uid-0", LATER).ledger, "uid-0").state is ClaimState.COMMITTED

    def test_only_a_reserved_claim_is_dispatched_and_only_a_dispatched_one_starts(self) -> None:
        spec = BudgetSpec(1.0, BUDGET_DELTA)
        ledger = submit_all(spec, [1.0, 1.0])  # Reserved, Waiting
        with pytest.raises(LedgerError, match="Reserved"):
            dispatch(ledger, "uid-1", LATER)
        with pytest.raises(LedgerError, match="never dispatched"):
            mark_started(ledger, "uid-0", LATER)
        once = dispatch(ledger, "uid-0", NOW).ledger
        assert dispatch(once, "uid-0", LATER) == Outcome(once)  # the first time is kept

    def test_committed_privacy_cannot_be_released(self) -> None:
        spec = BudgetSpec(1.0, BUDGET_DELTA)
        ledger = commit(submit_all(spec, [1.0]), spec, "uid-0", LATER).ledger
        with pytest.raises(LedgerError, match="Committed"):
            release(ledger, spec, "uid-0", LATER)

    def test_commit_of_less_than_reserved_frees_the_rest(self) -> None:
        spec = BudgetSpec(2.0, BUDGET_DELTA)
        ledger = submit_all(spec, [2.0, 0.5])
        outcome = commit(ledger, spec, "uid-0", LATER, epsilon_spent=1.5)
        assert kinds(outcome) == [("Committed", "uid-0"), ("Granted", "uid-1")]
        assert totals(outcome.ledger, spec) == approx_totals(1.5, 0.5, 0.0, 2.0, 2e-8)

    @pytest.mark.parametrize("spent", [-0.1, 2.5])
    def test_commit_outside_the_reservation_is_refused(self, spent: float) -> None:
        spec = BudgetSpec(2.0, BUDGET_DELTA)
        with pytest.raises(LedgerError, match="between 0 and"):
            commit(submit_all(spec, [2.0]), spec, "uid-0", LATER, epsilon_spent=spent)

    def test_only_reserved_claims_can_be_committed(self) -> None:
        spec = BudgetSpec(1.0, BUDGET_DELTA)
        ledger = submit_all(spec, [1.0, 1.0, 2.0])
        with pytest.raises(LedgerError, match="Waiting"):
            commit(ledger, spec, "uid-1", LATER)
        with pytest.raises(LedgerError, match="Rejected"):
            commit(ledger, spec, "uid-2", LATER)
        with pytest.raises(LedgerError, match="no claim"):
            commit(ledger, spec, "uid-unknown", LATER)

    def test_raising_epsilon_grants_waiting_claims(self) -> None:
        ledger = submit_all(BudgetSpec(2.0, BUDGET_DELTA), [2.0, 2.0, 2.0])
        outcome = reconcile(ledger, BudgetSpec(5.0, BUDGET_DELTA), LATER)
        assert states(outcome.ledger) == ["Reserved", "Reserved", "Waiting"]
        assert kinds(outcome) == [("Granted", "uid-1")]
        assert reconcile(outcome.ledger, BudgetSpec(5.0, BUDGET_DELTA), LATER) == Outcome(outcome.ledger)


class TestEpsilonChanges:
    def test_epsilon_cannot_go_below_committed_plus_reserved(self) -> None:
        spec = BudgetSpec(10.0, BUDGET_DELTA)
        ledger = commit(submit_all(spec, [3.0, 0.1, 0.2]), spec, "uid-0", LATER).ledger
        assert epsilon_floor(ledger, BUDGET_DELTA) == pytest.approx(3.3, abs=1e-4)
        assert can_set_epsilon(ledger, 3.3, BUDGET_DELTA)  # exactly: 3.0 + 0.1 + 0.2 is 3.3
        assert not can_set_epsilon(ledger, 3.2999, BUDGET_DELTA)
        assert can_set_epsilon(ledger, 100.0, BUDGET_DELTA)

    def test_lowering_delta_below_what_the_claims_spent_of_it_is_refused(self) -> None:
        ledger = submit_all(BudgetSpec(10.0, BUDGET_DELTA), [1.0] * 3)  # 3e-8 of delta held
        assert can_set_epsilon(ledger, 10.0, 3e-8)
        assert not can_set_epsilon(ledger, 10.0, 2e-8)  # no finite epsilon holds

    def test_an_empty_ledger_allows_any_positive_epsilon(self) -> None:
        assert can_set_epsilon(Ledger(), 1e-9, BUDGET_DELTA)
        with pytest.raises(ValueError):
            can_set_epsilon(Ledger(), 0.0, BUDGET_DELTA)


class TestStatus:
    def test_round_trip_through_status(self) -> None:
        spec = BudgetSpec(1.0, BUDGET_DELTA, "dpf", 3)
        ledger = submit_all(spec, [0.3, 0.3, 5.0, 0.1])
        ledger = commit(ledger, spec, "uid-0", LATER, epsilon_spent=0.25).ledger
        status = status_fields(ledger, spec)
        assert Ledger.from_status(status) == ledger
        assert status["epsilonCommitted"] == pytest.approx(0.25, abs=1e-4)
        assert status["claims"][2]["reason"] == "EpsilonAboveBudget"
        assert "reason" not in status["claims"][0]
        assert status["epsilonSummed"] == 0.65 and status["deltaSummed"] == 3e-8  # 0.25 spent, 0.3 and 0.1 held
        assert set(status) == {
            "epsilonCommitted",
            "epsilonReserved",
            "epsilonAvailable",
            "epsilonSummed",
            "deltaSummed",
            "epsilonUnlocked",
            "claims",
            "ledgerHead",
        }
        assert verify(status) == ledger

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
        spec = BudgetSpec(1.0, BUDGET_DELTA)
        whole = submit(Ledger(), spec, consumer(0), 1.0, BUDGET_DELTA, NOW).ledger  # all of epsilon and delta
        assert totals(whole, spec).exhausted
        assert not totals(submit_all(spec, [0.5]), spec).exhausted

    def test_a_generic_claim_below_the_budget_delta_leaves_a_sliver_of_epsilon(self) -> None:
        """(1.0, 1e-8)-DP is also (1.0 - 1.4e-5, 1e-5)-DP: the randomized-response bound sees that."""
        spec = BudgetSpec(1.0, BUDGET_DELTA)
        sums = totals(submit_all(spec, [1.0]), spec)
        assert 0 < sums.available < 1e-4 and sums.summed_epsilon == 1.0


@pytest.mark.parametrize("policy", ["fcfs", "dpf"])
@pytest.mark.parametrize("seed", range(4))
def test_invariants_hold_under_random_operations(policy: str, seed: int) -> None:
    """Property-style: 300 random operations from a seeded RNG, with a restart (status round trip)
    after each, sealed and verified under a key. After every operation: the composition of what is
    committed and reserved is within epsilon; no waiting claim fits in what the policy may grant;
    the change is a permitted transition (check_transition); repeating the operation on its result
    changes nothing; forbidden transitions raise LedgerError."""
    rng = random.Random(seed)
    spec = BudgetSpec(rng.choice([1.0, 2.5, 10.0]), BUDGET_DELTA, validate_policy(policy), rng.choice([1, 3, 10]))
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
        restarted = verify(status_fields(outcome.ledger, spec, key=b"k"), key=b"k")
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
        allowed = can_set_epsilon(ledger, new, spec.delta)
        return BudgetSpec(new, spec.delta, spec.policy, spec.unlock_steps) if allowed else spec
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
    holds = composed_epsilon(held(after), spec.delta)
    assert holds <= spec.epsilon
    ceiling = spec.epsilon if spec.policy == "fcfs" else min(after.epsilon_unlocked, spec.epsilon)
    for claim in after.claims:
        if claim.state is ClaimState.WAITING:  # granted as soon as it fits
            assert composed_epsilon(merged(held(after), ((claim.mechanism, 1),)), spec.delta) > ceiling
            assert claim.delta <= spec.delta and claim.epsilon <= spec.epsilon
    check_transition(before, after)  # nothing removed or reordered, final entries unchanged, states forward
    for old, new in zip(before.claims, after.claims[: len(before.claims)], strict=True):
        if old.state is ClaimState.WAITING and new.state is ClaimState.RESERVED:
            assert new.epsilon == old.epsilon  # all or nothing
    assert exact(after.epsilon_unlocked) >= exact(before.epsilon_unlocked) or after.epsilon_unlocked == spec.epsilon


def test_each_version_of_a_consumer_holds_its_own_claim_and_spends_add_up() -> None:
    spec = BudgetSpec(epsilon=1.0, delta=BUDGET_DELTA)
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
    assert totals(ledger, spec) == approx_totals(0.5, 0.5, 0.0, 1.0, 2e-8)
    assert Ledger.from_status(status_fields(ledger, spec)) == ledger  # the version survives the round trip
