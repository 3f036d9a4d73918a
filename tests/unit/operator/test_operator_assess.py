"""What each kind's handler decides from the object alone."""

from securemodel.operator import federated_round, privacy_budget, secure_model


def test_a_fresh_budget_has_all_of_its_epsilon_available() -> None:
    outcome = privacy_budget.assess({"epsilon": 10.0, "delta": 1e-5, "policy": "fcfs"}, {})
    assert outcome.phase == "Available"
    assert outcome.fields == {"epsilonCommitted": 0.0, "epsilonReserved": 0.0, "epsilonAvailable": 10.0}
    assert outcome.ready.status is True
    assert outcome.ready.message == "ε 10 of 10 available (committed 0, reserved 0)"
    assert [(c.type, c.status) for c in outcome.conditions] == [("Exhausted", False)]
    assert not outcome.warning


def test_available_is_epsilon_minus_committed_minus_reserved() -> None:
    outcome = privacy_budget.assess({"epsilon": 10.0}, {"epsilonCommitted": 4.0, "epsilonReserved": 2.0})
    assert outcome.fields == {"epsilonAvailable": 4.0}, "the ledger's totals are the ledger's to write"
    raised = privacy_budget.assess({"epsilon": 12.5}, {"epsilonCommitted": 4.0, "epsilonReserved": 2.0})
    assert raised.fields["epsilonAvailable"] == 6.5


def test_available_has_no_float_residue() -> None:
    outcome = privacy_budget.assess({"epsilon": 0.3}, {"epsilonCommitted": 0.1, "epsilonReserved": 0.2})
    assert outcome.fields["epsilonAvailable"] == 0.0


def test_a_spent_budget_is_exhausted_with_a_warning() -> None:
    outcome = privacy_budget.assess({"epsilon": 6.0}, {"epsilonCommitted": 4.0, "epsilonReserved": 2.0})
    assert outcome.phase == "Exhausted"
    assert outcome.ready.reason == "Exhausted"
    assert [(c.type, c.status) for c in outcome.conditions] == [("Exhausted", True)]
    assert outcome.warning


def test_a_new_model_waits_for_its_budget() -> None:
    spec = {"privacy": {"budgetRef": "breast-cancer", "epsilon": 2}}
    outcome = secure_model.assess(spec)
    assert outcome.phase == "WaitingForBudget"
    assert outcome.ready.status is False
    assert outcome.ready.reason == "WaitingForBudget"
    assert outcome.ready.message == "waiting for a reservation of ε=2 from PrivacyBudget breast-cancer"
    assert [(c.type, c.status) for c in outcome.conditions] == [("BudgetReserved", False)]


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
