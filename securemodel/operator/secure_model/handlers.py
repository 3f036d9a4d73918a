"""SecureModel handlers: one level-based reconciler per model, and the settlement of its claims on deletion.

:func:`reconcile` is a kopf daemon per model that loops *observe → decide → act*
(:mod:`.observe`, :mod:`.decide`, :mod:`.act`) until the model is deleted: it acts on the ledger,
writes the status it decided (so a claim's verdict shows as soon as the ledger holds it), then
writes the children (each write seen as written until the watch shows it:
:mod:`~securemodel.operator.recent_writes`). It wakes on any watch event of the model, of its budget (after kopf has put
the new ledger in :func:`~securemodel.operator.budget.handlers.budget_ledgers`), of a child
(the indexes below), or, for ``spec.model.fromRound``, of the round or one of its children (its
results ConfigMap), and at least every :data:`~.settings.PIPELINE_RESYNC_SECONDS` while it
works or :data:`~.settings.PIPELINE_IDLE_RESYNC_SECONDS` once it is done, which is also how
drift of a child (a Deployment scaled by hand, a deleted Secret) is undone.

Deleting a model waits (kopf's finalizer) until :func:`settle_on_delete` has settled every
live claim and every train pod of the model is gone (:func:`.decide.decide_deletion`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from securemodel.api import GROUP, VERSION
from securemodel.api.federated_round import KIND as ROUND_KIND
from securemodel.api.secure_model import KIND
from securemodel.operator.budget.handlers import budget_key, namespace_budgets_key
from securemodel.operator.federated.handlers import start_key
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.conditions import Outcome, Progress
from securemodel.operator.kube import child_entry
from securemodel.operator.recent_writes import RecentWrites
from securemodel.operator.runtime import Runtime, runtime
from securemodel.operator.status_writer import Published, write_status
from securemodel.operator.secure_model import children, outcomes, rounds
from securemodel.operator.secure_model.act import act, act_on_children, act_on_ledger
from securemodel.operator.secure_model.starts import source_entry
from securemodel.operator.secure_model.decide import decide, decide_deletion
from securemodel.operator.secure_model.observe import Children, observe, with_stored_jobs_and_pods
from securemodel.operator.settings import (
    DAEMON_CANCELLATION_BACKOFF,
    DAEMON_CANCELLATION_TIMEOUT,
    DELETION_SETTLE_SECONDS,
    PIPELINE_IDLE_RESYNC_SECONDS,
    PIPELINE_RESYNC_SECONDS,
    RETRY_BACKOFF,
)
from securemodel.operator.wakeups import sleep_until

CHILD = {children.UID_LABEL: kopf.PRESENT}


def model_key(uid: str) -> tuple[str, str]:
    """The wake-up key of a model's own changes and its children's."""
    return (KIND.kind, uid)



def _uid(labels: Mapping[str, str]) -> str:
    return labels[children.UID_LABEL]


@kopf.index("batch", "v1", "jobs", labels=CHILD)
async def model_jobs(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Job", body)}


@kopf.index("", "v1", "pods", labels=CHILD)
async def model_pods(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Pod", body)}


@kopf.index("apps", "v1", "deployments", labels=CHILD)
async def model_deployments(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Deployment", body)}


@kopf.index("", "v1", "services", labels=CHILD)
async def model_services(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Service", body)}


@kopf.index("", "v1", "persistentvolumeclaims", labels=CHILD)
async def model_pvcs(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("PersistentVolumeClaim", body)}


@kopf.index("", "v1", "configmaps", labels=CHILD)
async def model_config_maps(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("ConfigMap", body)}


@kopf.index("", "v1", "secrets", labels=CHILD)
async def model_secrets(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("Secret", body)}


@kopf.index("networking.k8s.io", "v1", "networkpolicies", labels=CHILD)
async def model_network_policies(body: kopf.Body, labels: Mapping[str, str], **_: Any) -> dict[str, Any]:
    return {_uid(labels): child_entry("NetworkPolicy", body)}


@kopf.on.event("batch", "v1", "jobs", labels=CHILD)
@kopf.on.event("", "v1", "pods", labels=CHILD)
@kopf.on.event("apps", "v1", "deployments", labels=CHILD)
@kopf.on.event("", "v1", "services", labels=CHILD)
@kopf.on.event("", "v1", "persistentvolumeclaims", labels=CHILD)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=CHILD)
@kopf.on.event("", "v1", "configmaps", labels=CHILD)
@kopf.on.event("", "v1", "secrets", labels=CHILD)
async def wake_owner(labels: Mapping[str, str], memo: kopf.Memo, **_: Any) -> None:
    """Wake the reconciler of the model that owns this child; kopf has already updated the indexes."""
    runtime(memo).wakeups.notify(model_key(_uid(labels)))


@kopf.index(GROUP, VERSION, ROUND_KIND.plural)
async def served_rounds(namespace: str, name: str, uid: str, spec: kopf.Spec, status: kopf.Status,
                        **_: Any) -> dict[tuple[str, str], Any]:  # fmt: skip
    """Each FederatedRound by name: a SecureModel with ``spec.model.fromRound`` serves its global model."""
    return {(namespace, name): rounds.round_entry(uid, spec, status)}


@kopf.on.event(GROUP, VERSION, ROUND_KIND.plural)
async def wake_round_servers(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Wake the models serving this round (its children's events wake them through the round's handlers)."""
    runtime(memo).wakeups.notify(start_key(ROUND_KIND.kind, namespace, name))


@kopf.index(GROUP, VERSION, KIND.plural)
async def model_uids(namespace: str, name: str, uid: str, spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], Any]:
    """Each SecureModel's uid, and what a public one trains on, by name: a model fine-tunes another's trained
    artifact (``spec.model.from``)."""
    return {(namespace, name): source_entry(uid, spec)}


def source_key(namespace: str, name: str) -> tuple[str, str, str]:
    """The wake-up key of a SecureModel others start from."""
    return (f"{KIND.kind}-source", namespace, name)


def _wake_keys(body: kopf.Body, uid: str) -> list[Any]:
    """The model's own key, its budget's (any budget of the namespace for a public model) or
    (``spec.model.fromRound``) its round's, and its starting weights' (and, for a SecureModel it starts from, any
    budget of the namespace: a public source's data may come to be protected)."""
    spec, namespace = body["spec"], body["metadata"]["namespace"]
    model = spec.get("model") or {}
    if model.get("fromRound"):
        return [model_key(uid), start_key(ROUND_KIND.kind, namespace, model["fromRound"])]
    keys: list[Any] = [model_key(uid)]
    privacy = spec["privacy"]
    if privacy.get("public"):  # any budget of the namespace may come to protect its data
        keys.append(namespace_budgets_key(namespace))
    else:
        keys.append(budget_key(BudgetRef(namespace, privacy["budgetRef"])))  # immutable (a CEL rule)
    start = model.get("from") or {}
    if start.get("secureModelRef"):
        keys += [source_key(namespace, start["secureModelRef"]), namespace_budgets_key(namespace)]
    if start.get("federatedRoundRef"):
        keys.append(start_key(ROUND_KIND.kind, namespace, start["federatedRoundRef"]))
    return keys


@kopf.on.event(GROUP, VERSION, KIND.plural)
async def wake_model(uid: str, namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Wake the model's reconciler, and those of the models that start from it; kopf has already updated the
    body it reads."""
    runtime(memo).wakeups.notify(model_key(uid))
    runtime(memo).wakeups.notify(source_key(namespace, name))


@kopf.daemon(
    GROUP,
    VERSION,
    KIND.plural,
    backoff=RETRY_BACKOFF,
    cancellation_backoff=DAEMON_CANCELLATION_BACKOFF,
    cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT,
)
async def reconcile(body: kopf.Body, uid: str, memo: kopf.Memo, stopped: kopf.DaemonStopped, **indexes: Any) -> None:
    """Observe, decide, act and publish the status, whenever something the model depends on changes."""
    current = runtime(memo)
    found = Children.of(indexes)
    published = Published()
    written = RecentWrites()
    conflicts: tuple[str, ...] = ()  # the last pass's: they stand until a pass writes those Secrets
    while not stopped:
        with current.wakeups.listen(*_wake_keys(body, uid)) as changed:
            if body["metadata"].get("deletionTimestamp"):
                return  # settle_on_delete takes over
            idle, conflicts = await _pass(current, body, found, written, published, conflicts, stopped)
            await sleep_until(changed, stopped, PIPELINE_IDLE_RESYNC_SECONDS if idle else PIPELINE_RESYNC_SECONDS)


async def _pass(
    current: Runtime,
    body: kopf.Body,
    found: Children,
    written: RecentWrites,
    published: Published,
    conflicts: tuple[str, ...],
    stopped: kopf.DaemonStopped,
) -> tuple[bool, tuple[str, ...]]:
    """One observe → decide → act pass; whether the model is idle now, and the Secret conflicts that stand.

    The pass's snapshot and decision (every child's manifest) are dropped when it returns instead of
    staying in the sleeping daemon's frame until its next pass.
    """
    snapshot = await observe(current, body, found, written)
    decision = decide(snapshot)
    assert decision.outcome is not None
    await act_on_ledger(current, snapshot, decision)
    outcome = _with_conflicts(decision.outcome, conflicts)
    if not stopped and not decision.quiet:  # the claim's verdict first, then the children's writes
        await write_status(current, KIND, body, outcome, published)
    acted = await act_on_children(current, snapshot, decision, written)
    if acted.conflicts != conflicts:
        conflicts = acted.conflicts
        outcome = _with_conflicts(decision.outcome, conflicts)
        if not stopped and not decision.quiet:
            await write_status(current, KIND, body, outcome, published)
    return outcome.progress is not Progress.WORKING and not decision.ledger, conflicts


def _with_conflicts(outcome: Outcome, conflicts: tuple[str, ...]) -> Outcome:
    """``outcome``, blocked while Secrets of the model's names are not its own."""
    if not conflicts:
        return outcome
    return outcomes.blocked(outcome, "SecretConflict",
                            f"Secret {', '.join(conflicts)} exists and is not this model's: rename or delete it")  # fmt: skip


@kopf.on.delete(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
async def settle_on_delete(body: kopf.Body, memo: kopf.Memo, **indexes: Any) -> None:
    """Settle the model's live claims and let its train pods end before the model goes."""
    current, written = runtime(memo), RecentWrites()
    snapshot = await observe(current, body, Children.of(indexes), written)
    decision = decide_deletion(snapshot)
    if not decision.settled and (snapshot.jobs or snapshot.pods):  # waiting on them: on what exists, not the index
        snapshot = await with_stored_jobs_and_pods(current, snapshot)
        decision = decide_deletion(snapshot)
    await act(current, snapshot, decision, written)
    if not decision.settled:
        raise kopf.TemporaryError("settling the model's claims; its train pods end first", delay=DELETION_SETTLE_SECONDS)
