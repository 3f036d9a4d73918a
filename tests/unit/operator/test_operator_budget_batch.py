"""A transaction decides its consecutive submissions together: the ledger one-by-one changes leave, one result per change."""

from __future__ import annotations

from securemodel.operator.budget.ledger import Change, applied, committing, dispatching, releasing, submitting
from securemodel.privacy import BudgetSpec, ClaimState, Consumer, DecisionKind, DpSgd, Ledger, Outcome, composed_epsilon

NOW = "2026-11-27T07:00:00Z"
SGD = DpSgd(2.0, 0.05, 2)


def consumer(index: int) -> Consumer:
    return Consumer("SecureModel", "clinic", f"m{index}", f"uid-{index}", "v1")


def one_by_one(ledger: Ledger, spec: BudgetSpec, changes: list[Change]) -> tuple[Ledger, list[Outcome | ValueError]]:
    """Each change applied on its own, as transactions did before they grouped submissions."""
    results: list[Outcome | ValueError] = []
    for change in changes:
        try:
            outcome = change(ledger, spec, NOW)
        except ValueError as error:
            results.append(error)
            continue
        ledger = outcome.ledger
        results.append(outcome)
    return ledger, results


def test_grouped_submissions_leave_the_ledger_one_by_one_changes_leave_with_a_result_per_change() -> None:
    cut = [composed_epsilon(((SGD, count),), 1e-5) for count in (20, 21)]
    spec = BudgetSpec(sum(cut) / 2, 1e-5)  # holds 20 of the DP-SGD claims
    changes: list[Change] = [
        submitting(consumer(0), spec.epsilon * 0.9, 1e-5),  # generic: most of the budget
        *(submitting(consumer(n), 1.0, 1e-5, SGD) for n in range(1, 6)),
        submitting(consumer(6), -1.0, 1e-5),  # refused by the rules
        releasing(consumer(0).key),  # frees the budget: the waiting claims are tried in arrival order
        *(submitting(consumer(n), 1.0, 1e-5, SGD) for n in range(7, 40)),
        dispatching(consumer(1).key),
        committing(consumer(1).key, 1.0, SGD),
        submitting(consumer(1), 1.0, 1e-5, SGD),  # a resubmission: nothing
    ]
    ledger, results = applied(Ledger(), spec, changes, NOW)
    expected, one_at_a_time = one_by_one(Ledger(), spec, changes)
    assert ledger == expected
    assert [type(r) for r in results] == [type(r) for r in one_at_a_time]
    assert isinstance(results[6], ValueError)
    states = [claim.state for claim in ledger.claims]
    assert states.count(ClaimState.RESERVED) + states.count(ClaimState.COMMITTED) == 20  # the ceiling cut the run
    assert ledger.claim(consumer(1).key).state is ClaimState.COMMITTED  # type: ignore[union-attr]
    # One decision per claim of each group, with its state after the group.
    decided = [(d.consumer.key, d.kind) for r in results[1:6] if isinstance(r, Outcome) for d in r.decisions]
    assert sorted(decided) == [(consumer(n).key, DecisionKind.QUEUED) for n in range(1, 6)]


def test_a_claim_granted_later_in_the_batch_is_not_also_queued() -> None:
    """DPF unlocks as claims arrive: the first claim waits for more than is unlocked, the second one's
    arrival unlocks enough for both. One by one the first is Queued then Granted; in one batch, Granted."""
    spec = BudgetSpec(1.0, 1e-5, "dpf", 2)
    changes = [submitting(consumer(0), 0.6, 1e-8), submitting(consumer(1), 0.4, 1e-8)]
    ledger, results = applied(Ledger(), spec, changes, NOW)
    expected, one_at_a_time = one_by_one(Ledger(), spec, changes)
    assert ledger == expected
    assert [[d.kind for d in r.decisions] for r in one_at_a_time if isinstance(r, Outcome)] == [
        [DecisionKind.QUEUED],
        [DecisionKind.GRANTED, DecisionKind.GRANTED],
    ]
    assert [[(d.consumer.key, d.kind) for d in r.decisions] for r in results if isinstance(r, Outcome)] == [
        [(consumer(0).key, DecisionKind.GRANTED)],
        [(consumer(1).key, DecisionKind.GRANTED)],
    ]
