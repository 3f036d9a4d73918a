"""What the budget and round handlers decide from the object alone."""

from securemodel.operator.budget import assess as budget_status
from securemodel.operator.federated import handlers as federated_round
from securemodel.privacy import BudgetSpec, ClaimState, Consumer, Ledger, commit, submit

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
    assert outcome.fields == {
        "epsilonCommitted": 0.0,
        "epsilonReserved": 0.0,
        "epsilonAvailable": 10.0,
        "epsilonUnlocked": 0.0,
        "claims": [],
    }
    assert outcome.ready.status is True
    assert outcome.ready.message == "ε 10 of 10 available (committed 0, reserved 0)"
    assert [(c.type, c.status) for c in outcome.conditions] == [("Exhausted", False)]
    assert not outcome.warning


def test_available_is_epsilon_minus_committed_minus_reserved() -> None:
    spec = BudgetSpec(10.0, 1e-5)
    outcome = budget_status.assess(spec, ledger_with(spec, (4.0, ClaimState.COMMITTED), (2.0, ClaimState.RESERVED)))
    assert (outcome.fields["epsilonCommitted"], outcome.fields["epsilonReserved"]) == (4.0, 2.0)
    assert outcome.fields["epsilonAvailable"] == 4.0
    assert [c["state"] for c in outcome.fields["claims"]] == ["Committed", "Reserved"]


def test_available_has_no_float_residue() -> None:
    spec = BudgetSpec(0.3, 1e-5)
    outcome = budget_status.assess(spec, ledger_with(spec, (0.1, ClaimState.COMMITTED), (0.2, ClaimState.RESERVED)))
    assert outcome.fields["epsilonAvailable"] == 0.0


def test_a_spent_budget_is_exhausted_with_a_warning() -> None:
    spec = BudgetSpec(6.0, 1e-5)
    ledger = ledger_with(spec, (4.0, ClaimState.COMMITTED), (2.0, ClaimState.RESERVED))
    ledger = submit(ledger, spec, Consumer("SecureModel", "ns", "late", "late"), 1.0, 1e-6, NOW).ledger
    outcome = budget_status.assess(spec, ledger)
    assert outcome.phase == "Exhausted"
    assert outcome.ready.reason == "Exhausted"
    assert outcome.ready.message == "ε 0 of 6 available (committed 4, reserved 2)"
    assert [(c.type, c.status) for c in outcome.conditions] == [("Exhausted", True)]
    assert outcome.warning


def test_epsilon_below_what_the_ledger_holds_is_not_ready() -> None:
    spec = BudgetSpec(6.0, 1e-5)
    ledger = ledger_with(spec, (4.0, ClaimState.COMMITTED), (2.0, ClaimState.RESERVED))
    outcome = budget_status.assess(BudgetSpec(5.0, 1e-5), ledger)
    assert (outcome.ready.status, outcome.ready.reason) == (False, "EpsilonBelowAllocated")
    assert outcome.ready.message.startswith("spec.epsilon 5 is below the 6 committed and reserved")
    assert outcome.phase == "Exhausted" and outcome.warning


def test_a_new_round_is_pending_with_every_silo_pending() -> None:
    spec = {
        "model": {"secureModelRef": "tumor-classifier"},
        "clients": [{"name": "clinic-a"}, {"name": "clinic-b"}, {"name": "clinic-c"}],
        "minClients": 2,
    }
    outcome = federated_round.assess(spec)
    assert outcome.phase == "Pending"
    assert outcome.ready.status is False
    assert outcome.ready.message == "waiting to start from SecureModel tumor-classifier: 3 silos, 2 must submit"
    assert outcome.fields["participants"] == [
        {"name": "clinic-a", "state": "Pending"},
        {"name": "clinic-b", "state": "Pending"},
        {"name": "clinic-c", "state": "Pending"},
    ]


def test_without_min_clients_every_silo_must_submit() -> None:
    spec = {"model": {"fromRound": "round-1"}, "clients": [{"name": "a"}, {"name": "b"}]}
    message = federated_round.assess(spec).ready.message
    assert message == "waiting to start from FederatedRound round-1: 2 silos, 2 must submit"
