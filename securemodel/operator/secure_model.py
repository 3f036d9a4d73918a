"""SecureModel handlers: accept the model and report what it waits for."""

from collections.abc import Mapping
from typing import Any

import kopf

from securemodel.api import GROUP, VERSION
from securemodel.api.secure_model import KIND, Phase
from securemodel.operator.settings import RETRY_BACKOFF
from securemodel.operator.status import READY, Condition, Outcome, publish


def assess(spec: Mapping[str, Any]) -> Outcome:
    """A new model first waits for its ε to be reserved from its PrivacyBudget."""
    privacy = spec["privacy"]
    message = f"waiting for a reservation of ε={float(privacy['epsilon']):g} from PrivacyBudget {privacy['budgetRef']}"
    return Outcome(
        phase=Phase.WAITING_FOR_BUDGET,
        ready=Condition(READY, False, "WaitingForBudget", message),
        conditions=(Condition("BudgetReserved", False, "NotReserved", message),),
    )


@kopf.on.resume(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
@kopf.on.create(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
@kopf.on.update(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
async def reconcile(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    """Publish the model's phase."""
    publish(assess(spec), body, patch)
