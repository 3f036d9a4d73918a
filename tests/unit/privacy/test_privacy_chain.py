"""The ledger's hash chain: each tamper attempt is caught and named, and the transition rules."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from securemodel.privacy.chain import LedgerTampered, budget_key, canonical, check_transition, verify
from securemodel.privacy.claims import BudgetSpec, ClaimState, Consumer, Ledger
from securemodel.privacy.ledger import commit, dispatch, mark_started, release, submit
from securemodel.privacy.mechanisms import DpSgd
from securemodel.privacy.status import status_fields

NOW, LATER = "2026-11-21T10:00:00Z", "2026-11-21T11:00:00Z"
SPEC = BudgetSpec(10.0, 1e-5)
KEY = budget_key(b"operator secret", "budget-uid")
RUN = DpSgd(3.5304316605045396, 64 / 456, 143)


def consumer(index: int) -> Consumer:
    return Consumer("SecureModel", "clinic-a", f"m{index}", f"uid-{index}")


def ledger_of(count: int = 4) -> Ledger:
    """Entry 0 Committed, 1 Reserved (dispatched, started), 2 Reserved, the rest Reserved too."""
    ledger = Ledger()
    for index in range(count):
        ledger = submit(ledger, SPEC, consumer(index), 2.0, 1e-5, NOW, mechanism=RUN).ledger
    ledger = commit(ledger, SPEC, "uid-0", LATER).ledger
    return mark_started(dispatch(ledger, "uid-1", LATER).ledger, "uid-1", LATER).ledger


def sealed(ledger: Ledger | None = None) -> dict[str, Any]:
    """The status as the API server hands it back: JSON, where 2.0 comes back as the integer 2."""
    text = json.dumps(status_fields(ledger or ledger_of(), SPEC, key=KEY))
    return json.loads(text.replace("2.0,", "2,"))


def tampered(status: dict[str, Any], *, key: bytes = KEY) -> LedgerTampered:
    with pytest.raises(LedgerTampered) as caught:
        verify(status, key=key)
    return caught.value


def test_a_sealed_ledger_verifies_after_a_json_round_trip() -> None:
    status = sealed()
    assert status["claims"][0]["epsilon"] == 2  # an int now: the canonical form reads it typed
    assert verify(status, key=KEY) == ledger_of()
    assert [c["previous"] for c in status["claims"][1:]] == [c["digest"] for c in status["claims"][:-1]]


def test_the_canonical_form_sorts_keys_and_writes_floats_in_hex() -> None:
    assert canonical({"b": 1, "a": 2.0}) == b'{"a":"0x1.0000000000000p+1","b":1}'


class TestTamperAttempts:
    def test_removing_the_first_claim_as_the_json_patch_of_issue_9_did(self) -> None:
        status = sealed()
        del status["claims"][0]
        error = tampered(status)
        assert (error.index, error.consumer) == (0, "SecureModel clinic-a/m1")
        assert "entries before it were removed" in str(error)

    def test_removing_a_claim_in_the_middle(self) -> None:
        status = sealed()
        del status["claims"][1]
        error = tampered(status)
        assert error.index == 1 and "the entry before it was removed" in error.problem

    def test_removing_the_last_claim(self) -> None:
        status = sealed()
        status["claims"].pop()
        assert "removed from its end" in tampered(status).problem

    def test_reordering_claims(self) -> None:
        status = sealed()
        status["claims"][1], status["claims"][2] = status["claims"][2], status["claims"][1]
        error = tampered(status)
        assert error.index == 1 and "reordered" in error.problem

    @pytest.mark.parametrize(
        ("field", "value"),
        [("epsilon", 0.5), ("state", "Released"), ("updated", "2030-01-01T00:00:00Z"), ("mechanism", None)],
    )
    def test_changing_the_committed_claim(self, field: str, value: Any) -> None:
        status = sealed()
        if value is None:
            del status["claims"][0][field]
        else:
            status["claims"][0][field] = value
        error = tampered(status)
        assert (error.index, error.consumer) == (0, "SecureModel clinic-a/m0")
        assert "does not match its digest" in error.problem

    def test_removing_a_started_mark_so_that_the_claim_could_be_released(self) -> None:
        status = sealed()
        del status["claims"][1]["started"]
        assert tampered(status).index == 1

    def test_raising_the_unlocked_epsilon(self) -> None:
        status = sealed()
        status["epsilonUnlocked"] = 10.0
        assert "epsilonUnlocked" in tampered(status).problem

    def test_wiping_the_ledger(self) -> None:
        assert "never sealed" in tampered({}).problem
        assert verify({}, key=KEY, require_seal=False) == Ledger()  # a budget the operator never wrote

    def test_rewriting_a_claim_and_recomputing_the_chain_without_the_key(self) -> None:
        ledger = ledger_of()
        forged = Ledger(
            (dataclasses.replace(ledger.claims[0], epsilon=0.1), *ledger.claims[1:]), ledger.epsilon_unlocked
        )
        status = json.loads(json.dumps(status_fields(forged, SPEC, key=b"a guess")))
        assert tampered(status).index == 0
        # Without a key anyone can recompute the chain: it then catches only edits that do not.
        assert verify(json.loads(json.dumps(status_fields(forged, SPEC))), key=b"") == forged

    def test_a_ledger_copied_from_another_budget(self) -> None:
        assert tampered(sealed(), key=budget_key(b"operator secret", "another-uid")).index == 0

    def test_an_unreadable_entry(self) -> None:
        status = sealed()
        status["claims"][2]["state"] = "Spent"
        assert tampered(status).index == 2


class TestTransitions:
    def test_the_rules_own_transitions_are_permitted(self) -> None:
        before = ledger_of()
        after = commit(before, SPEC, "uid-2", LATER, 1.5, mechanism=DpSgd(RUN.noise_multiplier, RUN.sample_rate, 100))
        after = release(after.ledger, SPEC, "uid-3", LATER)
        after = submit(after.ledger, SPEC, consumer(9), 1.0, 1e-5, LATER)
        check_transition(before, after.ledger)

    def test_removing_an_entry(self) -> None:
        before = ledger_of()
        with pytest.raises(LedgerTampered, match="entry 2 .*removed"):
            check_transition(before, Ledger((*before.claims[:2], *before.claims[3:]), before.epsilon_unlocked))

    def test_reordering(self) -> None:
        before = ledger_of()
        swapped = (before.claims[0], before.claims[2], before.claims[1], before.claims[3])
        with pytest.raises(LedgerTampered, match="reordered"):
            check_transition(before, Ledger(swapped, before.epsilon_unlocked))

    def test_changing_a_committed_entry(self) -> None:
        before = ledger_of()
        changed = dataclasses.replace(before.claims[0], epsilon=1.0)
        with pytest.raises(LedgerTampered, match="Committed, which is final"):
            check_transition(before, Ledger((changed, *before.claims[1:]), before.epsilon_unlocked))

    def test_moving_backwards_or_dropping_a_mark(self) -> None:
        before = ledger_of()
        waiting = dataclasses.replace(before.claims[2], state=ClaimState.WAITING)
        with pytest.raises(LedgerTampered, match="backwards"):
            check_transition(before, Ledger((*before.claims[:2], waiting, before.claims[3])))
        unstarted = dataclasses.replace(before.claims[1], started=None)
        with pytest.raises(LedgerTampered, match="started mark"):
            check_transition(before, Ledger((before.claims[0], unstarted, *before.claims[2:])))

    def test_committing_more_than_reserved(self) -> None:
        before = ledger_of()
        more = dataclasses.replace(
            before.claims[2],
            state=ClaimState.COMMITTED,
            mechanism=DpSgd(RUN.noise_multiplier, RUN.sample_rate, 500),
        )
        with pytest.raises(LedgerTampered, match="more than it reserved"):
            check_transition(before, Ledger((*before.claims[:2], more, before.claims[3])))
