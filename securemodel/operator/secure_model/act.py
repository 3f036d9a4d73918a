"""Carry out a SecureModel's :class:`~.decide.Decision` against the API server.

Order: the ledger first (:func:`act_on_ledger`: a Job is created only after its claim is marked
dispatched in the budget as stored), then (:func:`act_on_children`) the key Secrets, the other
children and the Jobs to stop. The reconciler publishes the status between the two, so a claim's
verdict shows without waiting on the model's other writes.
Every write is exact: Secrets are replaced under a resourceVersion precondition, children are
server-side applied by one field manager, Jobs are created only if absent, and the two writes a
stale view could make unsafe are re-checked with quorum reads just before they happen:

* a train Job is created only if the fresh ledger shows its claim Reserved, dispatched and
  never started, and no train pod of that version exists (the create itself fails if the Job
  exists);
* a dispatched claim is released only if its Job is gone or suspended and no train pod of
  that version exists (and the ledger refuses it anyway once the claim is started).

A public model's train Job (which no claim guards) is created only if a quorum list of the
namespace's PrivacyBudgets shows that none protects any of the data it declares public.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kubernetes

from securemodel.api import GROUP, VERSION
from securemodel.api.privacy_budget import KIND as BUDGET_KIND
from securemodel.operator import kube
from securemodel.operator.budget.directory import BudgetDirectory
from securemodel.operator.budget.ledger import (
    BudgetNotFound,
    BudgetRef,
    Change,
    committing,
    dispatching,
    releasing,
    starting,
    submitting,
)
from securemodel.operator.recent_writes import RecentWrites
from securemodel.operator.runtime import Runtime
from securemodel.operator.secure_model import children
from securemodel.operator.secure_model.decide import Decision, JobRecipe, LedgerAction, Snapshot, Verb
from securemodel.operator.secure_model.observe import declared_public
from securemodel.privacy import ClaimState, Ledger, LedgerError, LedgerTampered

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Acted:
    """What acting found that the decision could not know."""

    conflicts: tuple[str, ...] = ()  # Secrets of the model's names that it does not own


def change_of(action: LedgerAction) -> Change:
    """The ledger change (a pure rule bound to its arguments) one decided action makes."""
    match action.verb:
        case Verb.SUBMIT:
            assert action.consumer is not None
            return submitting(action.consumer, action.epsilon, action.delta, action.mechanism)
        case Verb.DISPATCH:
            return dispatching(action.key)
        case Verb.START:
            return starting(action.key)
        case Verb.COMMIT:
            return committing(action.key, action.epsilon, action.mechanism)
        case Verb.RELEASE:
            return releasing(action.key)


def _version_pods(s: Snapshot, version: str) -> str:
    return f"{children.selector(s.owner, 'train')},{children.VERSION_LABEL}={version}"


def _gone(client: kubernetes.client.ApiClient, s: Snapshot, job: str, version: str) -> bool:
    """Quorum reads: the train Job ``job`` is gone or suspended, and no train pod of ``version`` exists."""
    stored = kube.read(client, "Job", s.owner.namespace, job)
    if stored is not None and not (stored.get("spec") or {}).get("suspend"):
        return False
    return not kube.pods(client, s.owner.namespace, _version_pods(s, version))


async def _ledger(current: Runtime, s: Snapshot, decision: Decision) -> Ledger | None:
    """Apply the ledger actions; the ledger as last written (or as observed)."""
    if not decision.ledger:  # e.g. a model serving a FederatedRound's model, which has no budget
        return s.ledger
    ref = BudgetRef(s.owner.namespace, s.privacy.budget_ref)
    latest = s.ledger
    for action in decision.ledger:
        if action.verb is Verb.RELEASE and action.gone is not None:
            if not await asyncio.to_thread(_gone, current.client, s, action.gone, action.version):
                continue
        try:
            latest = await current.writer.apply(ref, change_of(action))
        except BudgetNotFound:
            return None
        except LedgerError as error:  # the budget as stored does not allow it: decided again next pass
            logger.info("%s/%s: %s not applied: %s", s.owner.namespace, s.owner.name, action.verb, error)
            continue
        except LedgerTampered as error:  # the budget says so in its conditions; nothing more is written to it
            logger.warning("%s/%s: the ledger of %s does not verify: %s", s.owner.namespace, s.owner.name, ref, error)
            return latest
        if action.verb is Verb.DISPATCH and decision.train is not None and decision.train[0] == action.key:
            await _create_train_job(current, s, latest, action.key, decision.train[1])
    return latest


async def _unhold(current: Runtime, s: Snapshot, decision: Decision, ledger: Ledger | None) -> None:
    """Take the settlement finalizer off train pods that ended; one that ran only once the ledger records it."""
    for name, key, ran in decision.unhold:
        claim = ledger.claim(key) if ledger is not None else None
        if ran and claim is not None and claim.started is None and claim.state is not ClaimState.COMMITTED:
            continue  # its start is not recorded yet: the next pass writes it first
        pod = next((p for p in s.pods if p["metadata"]["name"] == name), None)
        if pod is not None:
            await asyncio.to_thread(kube.remove_finalizer, current.client, pod, children.SETTLEMENT_FINALIZER)


async def _create_train_job(current: Runtime, s: Snapshot, ledger: Ledger, key: str, recipe: JobRecipe) -> None:
    claim = ledger.claim(key)
    if claim is None or claim.state is not ClaimState.RESERVED or claim.dispatched is None or claim.started:
        return
    job = recipe()
    name = job["metadata"]["name"]
    version = job["metadata"]["labels"][children.VERSION_LABEL]

    def create() -> dict[str, Any] | None:
        if kube.pods(current.client, s.owner.namespace, _version_pods(s, version)):
            return None
        return kube.create(current.client, job)  # None if the Job exists

    if await asyncio.to_thread(create) is not None:
        logger.info("%s/%s: train Job %s created", s.owner.namespace, s.owner.name, name)


def protected_now(client: kubernetes.client.ApiClient, s: Snapshot) -> tuple[str, ...]:
    """Quorum list: the names of the PrivacyBudgets of the model's namespace, as stored now, that protect any data
    the public model declares public."""
    namespace = s.owner.namespace
    listed = kubernetes.client.CustomObjectsApi(client).list_namespaced_custom_object(
        GROUP, VERSION, namespace, BUDGET_KIND.plural
    )
    fresh = BudgetDirectory()
    for item in listed.get("items") or ():
        fresh.put(BudgetRef(namespace, item["metadata"]["name"]), item.get("spec") or {})
    return tuple(sorted({name for _, _, source in declared_public(s.spec) for name in fresh.protecting(namespace, source)}))


async def _create_public_train_job(current: Runtime, s: Snapshot, job: Mapping[str, Any]) -> None:
    name = job["metadata"]["name"]
    version = job["metadata"]["labels"][children.VERSION_LABEL]

    def create() -> dict[str, Any] | None:
        if protected_now(current.client, s):  # the next pass sees the budget and says so
            return None
        if kube.pods(current.client, s.owner.namespace, _version_pods(s, version)):
            return None
        return kube.create(current.client, job)  # None if the Job exists

    if await asyncio.to_thread(create) is not None:
        logger.info("%s/%s: public train Job %s created", s.owner.namespace, s.owner.name, name)


def _owned_by(obj: Mapping[str, Any] | None, uid: str) -> bool:
    return obj is not None and any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or ())


async def _secrets(current: Runtime, s: Snapshot, decision: Decision, written: RecentWrites) -> list[str]:
    """Write the key Secrets in order, stopping at the first that fails (a certificate is never written
    before the CA that signs it); a name taken by a Secret the model does not own is a conflict."""
    conflicts = []
    for write in decision.secrets:
        name = write.body["metadata"]["name"]
        stored = s.secrets.get(name)
        if write.replace and stored is not None:
            try:
                replaced = await asyncio.to_thread(kube.replace, current.client, write.body,
                                                   stored["metadata"]["resourceVersion"])  # fmt: skip
            except kubernetes.client.ApiException as error:
                if error.status not in (404, 409):  # changed or gone meanwhile: decided again next pass
                    raise
                break
            written.wrote(replaced, stored)
            continue
        created = await asyncio.to_thread(kube.create, current.client, write.body)
        written.wrote(created, stored)
        if created is None:
            existing = await asyncio.to_thread(kube.secret_named, current.client, s.owner.namespace, name)
            if existing is not None and not _owned_by(existing, s.owner.uid):
                conflicts.append(name)
            break
    for name in decision.delete_secrets:
        await asyncio.to_thread(kube.delete, current.client, "Secret", s.owner.namespace, name)
    return conflicts


async def act_on_ledger(current: Runtime, s: Snapshot, decision: Decision) -> None:
    """The ledger part of ``decision``: its ledger actions (with the train Job a dispatch allows), then the train
    pods whose settlement finalizer the ledger as written lets go."""
    ledger = await _ledger(current, s, decision)
    await _unhold(current, s, decision, ledger)


def _seen(s: Snapshot, kind: str, name: str) -> Mapping[str, Any] | None:
    """The child ``kind`` ``name`` of the model as the snapshot shows it."""
    by_name = {"Secret": s.secrets, "NetworkPolicy": s.network_policies, "Job": s.jobs}.get(kind)
    if by_name is not None:
        return by_name.get(name)
    named = (s.deployment, s.service, s.pvc, s.results, s.allow_list)
    return next((o for o in named if o is not None and o["kind"] == kind and o["metadata"]["name"] == name), None)


async def act_on_children(current: Runtime, s: Snapshot, decision: Decision, written: RecentWrites) -> Acted:
    """The rest of ``decision``: the key Secrets, the other children, the public train Job, the Jobs to stop or
    delete (each write kept in ``written`` until the indexes show it); return what was found on the way."""
    conflicts = await _secrets(current, s, decision, written)
    for obj in decision.apply:  # one child that cannot be written does not hold back the others
        try:
            applied = await asyncio.to_thread(kube.apply, current.client, obj)
        except kubernetes.client.ApiException as error:
            name = f'{obj["kind"]} {obj["metadata"]["name"]}'
            logger.warning("%s/%s: %s not applied: %s %s", s.owner.namespace, s.owner.name, name, error.status, error.reason)
            continue
        written.wrote(applied, _seen(s, obj["kind"], obj["metadata"]["name"]))
    for obj in decision.create:
        created = await asyncio.to_thread(kube.create, current.client, obj)
        written.wrote(created, _seen(s, obj["kind"], obj["metadata"]["name"]))
    if decision.public_train is not None:
        await _create_public_train_job(current, s, decision.public_train)
    for name in decision.stop:
        await asyncio.to_thread(kube.merge_patch, current.client, "Job", s.owner.namespace, name,
                                {"spec": {"suspend": True}})  # fmt: skip
        logger.info("%s/%s: train Job %s suspended: no container of it ran", s.owner.namespace, s.owner.name, name)
    for name in decision.delete_jobs:
        await asyncio.to_thread(kube.delete, current.client, "Job", s.owner.namespace, name)
    return Acted(tuple(conflicts))


async def act(current: Runtime, s: Snapshot, decision: Decision, written: RecentWrites) -> Acted:
    """Apply ``decision`` in the module's order; return what was found on the way."""
    await act_on_ledger(current, s, decision)
    return await act_on_children(current, s, decision, written)
