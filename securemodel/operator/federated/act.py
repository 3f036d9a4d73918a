"""Carry out a FederatedRound's :class:`~.decide.Decision` against the API server.

Order, as for a SecureModel (:mod:`securemodel.operator.secure_model.act`): the ledgers first (a
SuperNode Job is created only after its claim is marked dispatched in the silo's budget as
stored), then the key Secrets (CA first), then the other children, then the Jobs to stop or delete.
The two writes a stale view could make unsafe are re-checked with quorum reads just before:

* a SuperNode Job is created only if the fresh ledger shows its claim Reserved, dispatched and never
  started, and neither that Job nor a SuperNode pod of that silo exists;
* a dispatched claim is released only if its SuperNode Job is gone or suspended and no SuperNode pod of
  the silo exists (and the ledger refuses it anyway once the claim is started).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import kubernetes

from securemodel.operator import kube
from securemodel.operator.budget.ledger import BudgetNotFound, BudgetRef
from securemodel.operator.federated import children
from securemodel.operator.federated.decide import Decision
from securemodel.operator.federated.snapshot import Snapshot
from securemodel.operator.runtime import Runtime
from securemodel.operator.secure_model.act import change_of
from securemodel.operator.secure_model.children import COMPONENT_LABEL
from securemodel.operator.secure_model.decide import Verb
from securemodel.privacy import ClaimState, Ledger, LedgerError, LedgerTampered

logger = logging.getLogger(__name__)


def _silo_pods(client: kubernetes.client.ApiClient, s: Snapshot, namespace: str, silo: str) -> list[dict[str, Any]]:
    selector = (f"{children.ROUND_UID_LABEL}={s.owner.uid},{COMPONENT_LABEL}={children.SUPERNODE},"
                f"{children.SILO_LABEL}={silo}")  # fmt: skip
    return kube.pods(client, namespace, selector)


def _gone(client: kubernetes.client.ApiClient, s: Snapshot, namespace: str, job: str, silo: str) -> bool:
    """Quorum reads: the SuperNode Job is gone or suspended, and no SuperNode pod of the silo exists."""
    stored = kube.read(client, "Job", namespace, job)
    if stored is not None and not (stored.get("spec") or {}).get("suspend"):
        return False
    return not _silo_pods(client, s, namespace, silo)


async def _create_supernode(current: Runtime, s: Snapshot, ledger: Ledger, key: str, job: Mapping[str, Any]) -> None:
    claim = ledger.claim(key)
    if claim is None or claim.state is not ClaimState.RESERVED or claim.dispatched is None or claim.started:
        return
    meta = job["metadata"]
    silo = meta["labels"][children.SILO_LABEL]

    def absent() -> bool:
        return kube.read(current.client, "Job", meta["namespace"], meta["name"]) is None and not _silo_pods(
            current.client, s, meta["namespace"], silo
        )

    if await asyncio.to_thread(absent) and await asyncio.to_thread(kube.create, current.client, job) is not None:
        logger.info("%s/%s: SuperNode Job %s/%s created", s.owner.namespace, s.owner.name, meta["namespace"], meta["name"])


async def _ledgers(current: Runtime, s: Snapshot, decision: Decision) -> dict[BudgetRef, Ledger]:
    """Apply the ledger actions, budget by budget; the ledgers as last written."""
    latest = {silo.ref: silo.ledger for silo in s.silos if silo.ledger is not None}
    supernodes = dict(decision.supernodes)
    for ref, action in decision.ledger:
        if action.verb is Verb.RELEASE and action.gone is not None:
            if not await asyncio.to_thread(_gone, current.client, s, ref.namespace, action.gone, action.version):
                continue
        try:
            latest[ref] = await current.writer.apply(ref, change_of(action))
        except BudgetNotFound:
            continue
        except LedgerError as error:  # the budget as stored does not allow it: decided again next pass
            logger.info("%s/%s: %s on %s not applied: %s", s.owner.namespace, s.owner.name, action.verb, ref, error)
            continue
        except LedgerTampered as error:  # the budget says so in its conditions; nothing more is written to it
            logger.warning("%s/%s: the ledger of %s does not verify: %s", s.owner.namespace, s.owner.name, ref, error)
            continue
        if action.verb is Verb.DISPATCH and action.key in supernodes:
            await _create_supernode(current, s, latest[ref], action.key, supernodes[action.key])
    return latest


async def _unhold(current: Runtime, s: Snapshot, decision: Decision, ledgers: Mapping[BudgetRef, Ledger]) -> None:
    """Take the settlement finalizer off SuperNode pods that ended; one that ran only once its ledger records it."""
    for namespace, name, ref, key, ran in decision.unhold:
        ledger = ledgers.get(ref)
        claim = ledger.claim(key) if ledger is not None else None
        if ran and claim is not None and claim.started is None and claim.state is not ClaimState.COMMITTED:
            continue  # its start is not recorded yet: the next pass writes it first
        pod = next((p for silo in s.silos for p in silo.pods
                    if p["metadata"]["name"] == name and p["metadata"]["namespace"] == namespace), None)  # fmt: skip
        if pod is not None:
            await asyncio.to_thread(kube.remove_finalizer, current.client, pod, children.SETTLEMENT_FINALIZER)


async def _secrets(current: Runtime, s: Snapshot, decision: Decision) -> list[str]:
    """Write the key Secrets in order, stopping at the first that fails; a name taken by a Secret this round
    did not write is a conflict (reported, never adopted)."""
    conflicts = []
    for write in decision.secrets:
        meta = write.body["metadata"]
        stored = s.secrets.get((meta["namespace"], meta["name"]))
        if write.replace and stored is not None:
            try:
                await asyncio.to_thread(kube.replace, current.client, write.body, stored["metadata"]["resourceVersion"])
            except kubernetes.client.ApiException as error:
                if error.status not in (404, 409):  # changed or gone meanwhile: decided again next pass
                    raise
                break
            continue
        if await asyncio.to_thread(kube.create, current.client, write.body) is None:
            existing = await asyncio.to_thread(kube.secret_named, current.client, meta["namespace"], meta["name"])
            labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
            if existing is not None and labels.get(children.ROUND_UID_LABEL) != s.owner.uid:
                conflicts.append(f"{meta['namespace']}/{meta['name']}")
            break
    return conflicts


async def act(current: Runtime, s: Snapshot, decision: Decision) -> list[str]:
    """Apply ``decision``; return the Secrets found in the way (``namespace/name``)."""
    ledgers = await _ledgers(current, s, decision)
    await _unhold(current, s, decision, ledgers)
    conflicts = await _secrets(current, s, decision)
    isolated = True
    for obj in decision.apply:  # one child that cannot be written does not hold back the others
        try:
            await asyncio.to_thread(kube.apply, current.client, obj)
        except kubernetes.client.ApiException as error:
            name = f'{obj["kind"]} {obj["metadata"]["name"]}'
            logger.warning("%s/%s: %s not applied: %s %s", s.owner.namespace, s.owner.name, name, error.status, error.reason)
            isolated = isolated and obj["kind"] != "NetworkPolicy"
    if not isolated:  # no pod of the round starts before its connections are closed; the next pass tries again
        return conflicts
    for obj in decision.create:
        await asyncio.to_thread(kube.create, current.client, obj)
    for namespace, name in decision.stop:
        await asyncio.to_thread(kube.merge_patch, current.client, "Job", namespace, name, {"spec": {"suspend": True}})
        logger.info("%s/%s: SuperNode Job %s/%s suspended: no container of it ran", s.owner.namespace, s.owner.name,
                    namespace, name)  # fmt: skip
    for namespace, name in decision.delete_jobs:
        await asyncio.to_thread(kube.delete, current.client, "Job", namespace, name)
    for namespace, name in decision.delete_secrets:
        await asyncio.to_thread(kube.delete, current.client, "Secret", namespace, name)
    for namespace, name in decision.delete_policies:
        await asyncio.to_thread(kube.delete, current.client, "NetworkPolicy", namespace, name)
    return conflicts
