"""FederatedRound handlers: one level-based reconciler per round, and the settlement of its claims on deletion.

:func:`reconcile` is a kopf daemon per round that loops *observe → decide → act*
(:mod:`.observe`, :mod:`.decide`, :mod:`.act`) and writes the status it decided. It wakes on any
watch event of the round, of a silo's budget, of its starting SecureModel or previous round, or of
a child (the indexes below, in the round's namespace and the silos'), and at least every
:data:`~.settings.PIPELINE_RESYNC_SECONDS` while it works. Deleting a round waits (kopf's
finalizer) until :func:`settle_on_delete` has settled every silo's claim and every SuperNode pod is gone.

The operator must watch the silos' namespaces too (all namespaces, or each of them in
``--namespace``): the SuperNode pods' container statuses decide what each silo's budget is charged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from securemodel.api import GROUP, VERSION
from securemodel.api.federated_round import KIND
from securemodel.api.privacy_budget import KIND as BUDGET_KIND
from securemodel.api.secure_model import KIND as MODEL_KIND
from securemodel.operator.budget.handlers import budget_key
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.conditions import READY, Condition, Outcome, Progress
from securemodel.operator.federated import children
from securemodel.operator.federated.act import act
from securemodel.operator.federated.decide import decide, decide_deletion
from securemodel.operator.federated.observe import Indexes, observe
from securemodel.operator.federated.snapshot import BudgetView
from securemodel.operator.kube import child_entry
from securemodel.operator.runtime import Runtime, runtime
from securemodel.operator.status_writer import Published, write_status
from securemodel.operator.settings import (
    DAEMON_CANCELLATION_BACKOFF,
    DAEMON_CANCELLATION_TIMEOUT,
    DELETION_SETTLE_SECONDS,
    PIPELINE_IDLE_RESYNC_SECONDS,
    PIPELINE_RESYNC_SECONDS,
    RETRY_BACKOFF,
)
from securemodel.operator.wakeups import sleep_until

CHILD = {children.ROUND_UID_LABEL: kopf.PRESENT}


def round_key(uid: str) -> tuple[str, str]:
    """The wake-up key of a round's own changes and its children's."""
    return (KIND.kind, uid)


def start_key(kind: str, namespace: str, name: str) -> tuple[str, str, str]:
    """The wake-up key of a SecureModel or a FederatedRound a round may start from."""
    return (f"{KIND.kind}-start-{kind}", namespace, name)



def _uid(labels: Mapping[str, str]) -> str:
    return labels[children.ROUND_UID_LABEL]


@kopf.index("batch", "v1", "jobs", labels=CHILD)
async def round_jobs(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Job", body)}


@kopf.index("", "v1", "pods", labels=CHILD)
async def round_pods(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Pod", body)}


@kopf.index("", "v1", "services", labels=CHILD)
async def round_services(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Service", body)}


@kopf.index("", "v1", "persistentvolumeclaims", labels=CHILD)
async def round_pvcs(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("PersistentVolumeClaim", body)}


@kopf.index("", "v1", "configmaps", labels=CHILD)
async def round_config_maps(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("ConfigMap", body)}


@kopf.index("", "v1", "secrets", labels=CHILD)
async def round_secrets(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Secret", body)}


@kopf.index(GROUP, VERSION, BUDGET_KIND.plural)
async def round_budgets(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[BudgetRef, BudgetView]:
    """What each budget protects and who may spend it (``spec.data.sources``, ``spec.consumers``)."""
    return {BudgetRef(namespace, name): BudgetView.of(spec)}


@kopf.index(GROUP, VERSION, MODEL_KIND.plural)
async def round_secure_models(namespace: str, name: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], Any]:
    """Each SecureModel's ``spec.model``: a round may start from its architecture."""
    return {(namespace, name): dict(spec.get("model") or {})}


@kopf.index(GROUP, VERSION, KIND.plural)
async def round_identities(namespace: str, name: str, uid: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], Any]:
    """Each round's uid and ``spec.rounds`` by name: a later round finds the results of the one it starts from,
    and its global model is authenticated as bound to that uid and final round number."""
    return {(namespace, name): {"uid": uid, "rounds": int(spec.get("rounds", 1))}}


@kopf.on.event("batch", "v1", "jobs", labels=CHILD)
@kopf.on.event("", "v1", "pods", labels=CHILD)
@kopf.on.event("", "v1", "services", labels=CHILD)
@kopf.on.event("", "v1", "persistentvolumeclaims", labels=CHILD)
@kopf.on.event("", "v1", "configmaps", labels=CHILD)
@kopf.on.event("", "v1", "secrets", labels=CHILD)
async def wake_round(labels: Mapping[str, str], namespace: str, memo: kopf.Memo, **_: Any) -> None:
    """Wake the round that owns this child, and the rounds that start from it (its results ConfigMap)."""
    wakeups = runtime(memo).wakeups
    wakeups.notify(round_key(_uid(labels)))
    wakeups.notify(start_key(KIND.kind, namespace, labels.get(children.ROUND_LABEL, "")))


@kopf.on.event(GROUP, VERSION, MODEL_KIND.plural)
async def wake_on_model(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    runtime(memo).wakeups.notify(start_key(MODEL_KIND.kind, namespace, name))


@kopf.on.event(GROUP, VERSION, KIND.plural)
async def wake_on_round(uid: str, memo: kopf.Memo, **_: Any) -> None:
    runtime(memo).wakeups.notify(round_key(uid))


def _wake_keys(body: kopf.Body, uid: str) -> list[Any]:
    spec, namespace = body["spec"], body["metadata"]["namespace"]  # immutable (a CEL rule)
    keys: list[Any] = [round_key(uid)]
    keys += [budget_key(BudgetRef(c.get("namespace") or namespace, c["budgetRef"])) for c in spec["clients"]]
    model = spec["model"]
    if model.get("secureModelRef"):
        keys.append(start_key(MODEL_KIND.kind, namespace, model["secureModelRef"]))
    if model.get("fromRound"):
        keys.append(start_key(KIND.kind, namespace, model["fromRound"]))
    return keys


@kopf.daemon(
    GROUP,
    VERSION,
    KIND.plural,
    backoff=RETRY_BACKOFF,
    cancellation_backoff=DAEMON_CANCELLATION_BACKOFF,
    cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT,
)
async def reconcile(body: kopf.Body, uid: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **indexes: Any) -> None:
    """Observe, decide, act and publish the status, whenever something the round depends on changes."""
    current = runtime(memo)
    found = Indexes.of(indexes)
    keys = _wake_keys(body, uid)
    published = Published()
    while not stopped:
        with current.wakeups.listen(*keys) as changed:
            if body["metadata"].get("deletionTimestamp"):
                return  # settle_on_delete takes over
            idle = await _pass(current, body, found, published, stopped)
            await sleep_until(changed, stopped, PIPELINE_IDLE_RESYNC_SECONDS if idle else PIPELINE_RESYNC_SECONDS)


async def _pass(current: Runtime, body: kopf.Body, found: Indexes, published: Published,
                stopped: kopf.DaemonStopped) -> bool:  # fmt: skip
    """One observe → decide → act pass; whether the round is idle now. Its snapshot and decision are dropped when it
    returns, not kept by the sleeping daemon."""
    snapshot = await observe(current, body, found)
    decision = decide(snapshot)
    conflicts = await act(current, snapshot, decision)
    outcome = decision.outcome
    assert outcome is not None
    if conflicts:
        text = f"Secret {', '.join(conflicts)} exists and is not this round's: rename or delete it"
        outcome = Outcome(outcome.phase, Condition(READY, False, "SecretConflict", text), outcome.conditions,
                          outcome.fields, True, Progress.STALLED)  # fmt: skip
    if not stopped:
        await write_status(current, KIND, body, outcome, published)
    return outcome.progress is not Progress.WORKING and not decision.ledger


@kopf.on.delete(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
async def settle_on_delete(body: kopf.Body, memo: kopf.Memo, **indexes: Any) -> None:
    """Settle the silos' claims, stop the round's pods and remove its Secrets in the silos' namespaces."""
    current = runtime(memo)
    snapshot = await observe(current, body, Indexes.of(indexes))
    decision = decide_deletion(snapshot)
    await act(current, snapshot, decision)
    if not decision.settled:
        raise kopf.TemporaryError("settling the silos' claims; their SuperNode pods end first", delay=DELETION_SETTLE_SECONDS)
