"""What a budget's status says, decided from its spec and ledger alone."""

import pytest

from securemodel.operator.budget import assess as budget_status
from securemodel.operator.conditions import Progress

from securemodel.privacy import BudgetSpec, ClaimState, Consumer, Ledger, LedgerTampered, commit, submit

NOW = "2026-11-21T10:00:00Z"


def ledger_with(spec: BudgetSpec, *claims: tuple[float, ClaimState]) -> Ledger:
    """A ledger whose claims of the given epsilon end in the given states (Reserved or Committed)."""
    ledger = Ledger()
    for number, (epsilon, state) in enumerate(claims):
        uid = f"uid-{number}"
        ledger = submit(ledger, spec, Consumer("SecureModel", "ns", f"m{number}", uid), epsilon, 1e-6, NOW).ledger
        if state is ClaimState.COMMITTED:
            ledger = commit(ledger, spec, uid, NOW).ledger
    return ledger


def test_a_fresh_budget_has_all_of_its_epsilon_available() -> None:
    outcome = budget_status.assess(BudgetSpec(10.0, 1e-5), Ledger())
    assert outcome.phase == "Available"
    fields = dict(outcome.fields)
    assert fields.pop("ledgerHead")  # the seal of the (empty) hash chain
    assert fields == {
        "epsilonCommitted": 0.0,
        "epsilonReserved": 0.0,
        "epsilonAvailable": 10.0,
        "epsilonSummed": 0.0,
        "deltaSummed": 0.0,
        "epsilonUnlocked": 0.0,
        "claims": [],
    }
    assert outcome.ready.status is True
    assert outcome.ready.message == "ε 10 of 10 available (committed 0, reserved 0; summed they would be 0)"
    assert [(c.type, c.status) for c in outcome.conditions] == [("Exhausted", False)]
    assert not outcome.warning


def test_available_is_epsilon_minus_committed_minus_reserved() -> None:
    spec = BudgetSpec(10.0, 1e-5)
    outcome = budget_status.assess(spec, ledger_with(spec, (4.0, ClaimState.COMMITTED), (2.0, ClaimState.RESERVED)))
    committed, reserved = outcome.fields["epsilonCommitted"], outcome.fields["epsilonReserved"]
    assert committed == pytest.approx(4.0, abs=1e-4) and reserved == pytest.approx(2.0, abs=1e-4)
    assert committed <= 4.0 and committed + reserved <= 6.0  # composed: never more than the sum
    assert outcome.fields["epsilonAvailable"] == pytest.approx(10.0 - committed - reserved)
    assert outcome.fields["epsilonSummed"] == 6.0
    assert [c["state"] for c in outcome.fields["claims"]] == ["Committed", "Reserved"]


def test_a_full_budget_shows_no_negative_headroom() -> None:
    spec = BudgetSpec(0.3, 1e-5)
    outcome = budget_status.assess(spec, ledger_with(spec, (0.1, ClaimState.COMMITTED), (0.2, ClaimState.RESERVED)))
    assert 0.0 <= outcome.fields["epsilonAvailable"] <= 1e-4  # composition charges at most the sum


def test_a_spent_budget_is_exhausted_with_a_warning() -> None:
    spec = BudgetSpec(6.0, 1e-5)
    ledger = ledger_with(spec, (6.0, ClaimState.COMMITTED))
    ledger = submit(ledger, spec, Consumer("SecureModel", "ns", "late", "late"), 1.0, 1e-6, NOW).ledger
    outcome = budget_status.assess(spec, ledger)
    assert outcome.phase == "Exhausted"
    assert outcome.ready.reason == "Exhausted"
    assert outcome.ready.message.startswith("ε ") and "of 6 available (committed 6" in outcome.ready.message
    assert [(c.type, c.status) for c in outcome.conditions] == [("Exhausted", True)]
    assert outcome.warning


def test_epsilon_below_what_the_ledger_holds_is_not_ready() -> None:
    spec = BudgetSpec(6.0, 1e-5)
    ledger = ledger_with(spec, (4.0, ClaimState.COMMITTED), (2.0, ClaimState.RESERVED))
    outcome = budget_status.assess(BudgetSpec(5.0, 1e-5), ledger)
    assert (outcome.ready.status, outcome.ready.reason) == (False, "EpsilonBelowAllocated")
    assert outcome.ready.message.startswith("spec.epsilon 5 is below the 6 committed and reserved") or \
        outcome.ready.message.startswith("spec.epsilon 5 is below the 5.99")
    assert outcome.phase == "Exhausted" and outcome.warning


def test_a_budget_sharing_data_with_another_is_not_ready_and_stalls() -> None:
    outcome = budget_status.assess(BudgetSpec(5.0, 1e-5, overlaps=("other",)), Ledger())
    assert not outcome.ready.status and outcome.ready.reason == "DataOverlap"
    assert "PrivacyBudget other of this namespace covers some of the same data" in outcome.ready.message
    assert outcome.progress is Progress.STALLED


def test_a_tampered_ledger_stops_the_budget() -> None:
    outcome = budget_status.tampered(LedgerTampered(0, "SecureModel ns/m", "its content does not match its digest"))
    assert (outcome.ready.status, outcome.ready.reason) == (False, "LedgerTampered")
    assert "does not match its digest" in outcome.ready.message
    assert {c.type: c.status for c in outcome.kstatus()} == {"Reconciling": False, "Stalled": True}
