"""PrivacyBudget handlers: report what is committed, reserved and still available."""

from collections.abc import Mapping
from typing import Any

import kopf

from securemodel.api import GROUP, VERSION
from securemodel.api.privacy_budget import KIND, Phase
from securemodel.operator.settings import RETRY_BACKOFF
from securemodel.operator.status import READY, Condition, Outcome, publish


def assess(spec: Mapping[str, Any], status: Mapping[str, Any]) -> Outcome:
    """The budget's phase and conditions from its total ε and the ledger's totals.

    The totals belong to the ledger: they are only written here to start them at 0, so this
    handler never overwrites a newer total with the one it read.
    """
    epsilon = float(spec["epsilon"])
    committed = float(status.get("epsilonCommitted") or 0.0)
    reserved = float(status.get("epsilonReserved") or 0.0)
    available = round(epsilon - committed - reserved, 12)
    summary = f"ε {available:g} of {epsilon:g} available (committed {committed:g}, reserved {reserved:g})"
    exhausted = available <= 0
    totals = {key: 0.0 for key in ("epsilonCommitted", "epsilonReserved") if key not in status}
    return Outcome(
        phase=Phase.EXHAUSTED if exhausted else Phase.AVAILABLE,
        ready=Condition(READY, True, "Exhausted" if exhausted else "BudgetAvailable", summary),
        conditions=(Condition("Exhausted", exhausted, "NoBudgetLeft" if exhausted else "BudgetLeft", summary),),
        fields={**totals, "epsilonAvailable": available},
        warning=exhausted,
    )


@kopf.on.resume(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
@kopf.on.create(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
@kopf.on.update(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
async def reconcile(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, patch: kopf.Patch, **_: Any) -> None:
    """Publish the budget's availability."""
    publish(assess(spec, status), body, patch)
