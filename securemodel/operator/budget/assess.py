"""What a PrivacyBudget's status says, decided from its spec and ledger alone (pure)."""

from securemodel.api.privacy_budget import Phase
from securemodel.operator.conditions import READY, Condition, Outcome, Progress
from securemodel.privacy import BudgetSpec, Ledger, LedgerTampered, can_set_epsilon, epsilon_floor, status_fields, totals

EXHAUSTED = "Exhausted"
TAMPERED = "LedgerTampered"
OVERLAP = "DataOverlap"


def assess(spec: BudgetSpec, ledger: Ledger) -> Outcome:
    """The budget's whole status: the ledger with its totals, the phase, Ready and Exhausted.

    Exhausted when nothing is left to grant (available <= 0). Ready is False only when
    ``spec.epsilon`` is below what the ledger holds (the composition of committed and reserved
    claims at ``spec.delta``), which the admission policy prevents; the ledger then grants
    nothing until it is raised, and when another budget of the namespace covers some of the same
    data (``spec.overlaps``): neither grants until a data steward makes them disjoint.
    """
    sums = totals(ledger, spec)
    summary = (
        f"ε {sums.available:.4g} of {spec.epsilon:g} available "
        f"(committed {sums.committed:.4g}, reserved {sums.reserved:.4g}; summed they would be {sums.summed_epsilon:.4g})"
    )
    if not can_set_epsilon(ledger, spec.epsilon, spec.delta):
        ready = Condition(
            READY,
            False,
            "EpsilonBelowAllocated",
            f"spec.epsilon {spec.epsilon:g} is below the {epsilon_floor(ledger, spec.delta):g} committed and reserved: "
            f"raise it to at least that; nothing is granted meanwhile. {summary}",
        )
    elif spec.overlaps:
        ready = Condition(
            READY,
            False,
            OVERLAP,
            f"PrivacyBudget {', '.join(spec.overlaps)} of this namespace covers some of the same data (spec.data.sources): "
            f"neither grants until they are disjoint. {summary}",
        )
    else:
        ready = Condition(READY, True, EXHAUSTED if sums.exhausted else "BudgetAvailable", summary)
    return Outcome(
        phase=Phase.EXHAUSTED if sums.exhausted else Phase.AVAILABLE,
        ready=ready,
        conditions=(Condition(EXHAUSTED, sums.exhausted, "NoBudgetLeft" if sums.exhausted else "BudgetLeft", summary),),
        fields=status_fields(ledger, spec),
        warning=sums.exhausted or not ready.status,
        progress=Progress.STALLED if spec.overlaps else Progress.DONE,
    )


def tampered(error: LedgerTampered) -> Outcome:
    """A ledger whose hash chain or history does not verify: no grant, no write of the ledger, until a person
    restores it (the ledger as stored stays as evidence)."""
    message = f"the ledger does not verify, so nothing is granted or settled: {error}"
    return Outcome(phase=Phase.AVAILABLE, ready=Condition(READY, False, TAMPERED, message), warning=True,
                   progress=Progress.STALLED)  # fmt: skip
