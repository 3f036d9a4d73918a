"""What a PrivacyBudget's status says, decided from its spec and ledger alone (pure)."""

from securemodel.api.privacy_budget import Phase
from securemodel.operator.conditions import READY, Condition, Outcome
from securemodel.privacy import BudgetSpec, Ledger, can_set_epsilon, epsilon_floor, status_fields, totals

EXHAUSTED = "Exhausted"


def assess(spec: BudgetSpec, ledger: Ledger) -> Outcome:
    """The budget's whole status: the ledger with its totals, the phase, Ready and Exhausted.

    Exhausted when nothing is left to grant (available <= 0). Ready is False only when
    ``spec.epsilon`` is below what the ledger holds (committed + reserved), which the
    admission policy in deploy/ prevents; the ledger then grants nothing until it is raised.
    """
    sums = totals(ledger, spec)
    summary = (
        f"ε {sums.available:g} of {spec.epsilon:g} available "
        f"(committed {sums.committed:g}, reserved {sums.reserved:g})"
    )
    if not can_set_epsilon(ledger, spec.epsilon):
        ready = Condition(
            READY,
            False,
            "EpsilonBelowAllocated",
            f"spec.epsilon {spec.epsilon:g} is below the {epsilon_floor(ledger):g} committed and reserved: "
            f"raise it to at least that; nothing is granted meanwhile. {summary}",
        )
    else:
        ready = Condition(READY, True, EXHAUSTED if sums.exhausted else "BudgetAvailable", summary)
    return Outcome(
        phase=Phase.EXHAUSTED if sums.exhausted else Phase.AVAILABLE,
        ready=ready,
        conditions=(Condition(EXHAUSTED, sums.exhausted, "NoBudgetLeft" if sums.exhausted else "BudgetLeft", summary),),
        fields=status_fields(ledger, spec),
        warning=sums.exhausted or not ready.status,
    )
