"""FederatedRound handlers: accept the round and list its participants."""

from collections.abc import Mapping
from typing import Any

import kopf

from securemodel.api import GROUP, VERSION
from securemodel.api.federated_round import KIND, ParticipantState, Phase
from securemodel.operator.settings import RETRY_BACKOFF
from securemodel.operator.conditions import READY, Condition, Outcome, publish


def assess(spec: Mapping[str, Any]) -> Outcome:
    """A new round is Pending, with every silo Pending."""
    clients = spec["clients"]
    needed = spec.get("minClients", len(clients))
    model = spec["model"]
    if "secureModelRef" in model:
        start = f"SecureModel {model['secureModelRef']}"
    else:
        start = f"FederatedRound {model['fromRound']}"
    message = f"waiting to start from {start}: {len(clients)} silos, {needed} must submit"
    return Outcome(
        phase=Phase.PENDING,
        ready=Condition(READY, False, "Pending", message),
        fields={"participants": [{"name": c["name"], "state": ParticipantState.PENDING.value} for c in clients]},
    )


@kopf.on.resume(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
@kopf.on.create(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
@kopf.on.update(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
async def reconcile(body: kopf.Body, spec: kopf.Spec, patch: kopf.Patch, **_: Any) -> None:
    """Publish the round's phase and participants."""
    publish(assess(spec), body, patch)
