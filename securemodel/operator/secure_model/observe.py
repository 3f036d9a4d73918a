"""Gather a SecureModel's :class:`~.decide.Snapshot`: its typed spec, its budget's ledger, the
operator's calibration, and its children from kopf's in-memory indexes (no LIST per pass).

The indexes (:mod:`.handlers`) hold every Job, Pod, Deployment, Service, PVC, ConfigMap and
Secret labelled with a model's uid, as the watches last saw them. A stale view is safe: every
write that depends on what it read is checked by the API server (resourceVersion preconditions,
creates that fail on existing names) or re-read with a quorum read just before it
(:mod:`.act`), and the ledger rules refuse what the budget's fresh state does not allow.
A child the reconciler wrote shows as written until the index shows that write
(:mod:`~securemodel.operator.recent_writes`), so a pass in between does not write it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kopf

from securemodel.operator.budget.directory import (
    DATA_PROTECTED,
    EVALUATION_PROTECTED,
    NOT_OBSERVED,
    START_PROTECTED,
    Refusal,
)
from securemodel.operator import kube
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.recent_writes import RecentWrites
from securemodel.operator.runtime import Runtime
from securemodel.operator.secure_model import children, starts
from securemodel.operator.secure_model.calibration import plan
from securemodel.operator.federated.children import results_name as round_results_name
from securemodel.operator.secure_model.decide import KIND, Snapshot
from securemodel.operator.secure_model.rounds import RoundModel, RoundProblem
from securemodel.operator.secure_model.rounds import resolve as resolve_round
from securemodel.operator.secure_model.spec import ModelSpecs, PrivacySpec, StartSpec, parse
from securemodel.operator.secure_model.starts import Start
from securemodel.operator.settings import ARTIFACTS_STORAGE, FINALIZER, METRICS_NAMESPACE, WORKER_IMAGE
from securemodel.operator.secure_model.keys import ROTATE_ANNOTATION, client_limits
from securemodel.privacy import Ledger

Index = kopf.Index[Any, Any]


@dataclass(frozen=True)
class Children:
    """The kopf indexes of a model's children, keyed by the model's uid."""

    jobs: Index
    pods: Index
    deployments: Index
    services: Index
    pvcs: Index
    config_maps: Index
    secrets: Index
    network_policies: Index
    ledgers: kopf.Index[BudgetRef, Ledger]
    rounds: Index  # (namespace, name) -> what fromRound reads of a FederatedRound (:func:`.rounds.round_entry`)
    round_config_maps: Index  # a round's uid -> its ConfigMaps (its results)
    models: Index  # (namespace, name) -> a SecureModel's :func:`.starts.source_entry` (spec.model.from.secureModelRef)

    @classmethod
    def of(cls, indexes: Mapping[str, Any]) -> Children:
        return cls(
            jobs=indexes["model_jobs"],
            pods=indexes["model_pods"],
            deployments=indexes["model_deployments"],
            services=indexes["model_services"],
            pvcs=indexes["model_pvcs"],
            config_maps=indexes["model_config_maps"],
            secrets=indexes["model_secrets"],
            network_policies=indexes["model_network_policies"],
            ledgers=indexes["budget_ledgers"],
            rounds=indexes["served_rounds"],
            round_config_maps=indexes["round_config_maps"],
            models=indexes["model_uids"],
        )


def _all(index: Index, uid: str) -> list[Mapping[str, Any]]:
    return list(index.get(uid, ()))


def _named(objects: Iterable[Mapping[str, Any]], name: str) -> Mapping[str, Any] | None:
    return next((o for o in objects if o["metadata"]["name"] == name), None)


def _round(namespace: str, name: str, found: Children) -> RoundModel | RoundProblem:
    entry = next(iter(found.rounds.get((namespace, name), ())), None)
    stored = _all(found.round_config_maps, entry["uid"]) if entry is not None else []
    results = next((c for c in stored if c["metadata"]["name"] == round_results_name(name)
                    and c["metadata"]["namespace"] == namespace), None)  # fmt: skip
    return resolve_round(name, entry, results)


def _start(current: Runtime, owner: children.Owner, spec: StartSpec, found: Children) -> Start:
    """The weights ``spec`` names, or why they are not available."""
    if spec.secure_model_ref is not None:
        name = spec.secure_model_ref
        entry = next(iter(found.models.get((owner.namespace, name), ())), None)
        uid = entry["uid"] if entry is not None else None
        deployment = _named(_all(found.deployments, uid), name) if uid is not None else None
        results = _named(_all(found.config_maps, uid), children.results_name(name)) if uid is not None else None
        start = starts.from_secure_model(owner.name, name, uid, deployment, results)
        if isinstance(start, starts.InitArtifact) and entry is not None and entry["public"] is not None:
            served = ((deployment or {}).get("metadata") or {}).get("labels", {}).get(children.TRAINING_LABEL, "")
            budgets = current.budgets
            problem = starts.public_source(name, entry, served, budgets.unrecorded(found.ledgers, owner.namespace),
                                           budgets.protecting(owner.namespace, entry["public"]))  # fmt: skip
            return problem or start
        return start
    if spec.federated_round_ref is not None:
        return starts.from_round(_round(owner.namespace, spec.federated_round_ref, found))
    assert spec.file is not None
    return starts.from_file(spec.file)


async def observe(current: Runtime, body: Mapping[str, Any], found: Children, written: RecentWrites) -> Snapshot:
    """The snapshot of the model ``body`` now: its children as the indexes show them, or as the reconciler wrote
    them where the indexes do not show that write yet."""
    metadata = body["metadata"]
    owner = children.Owner.of(body)
    spec = parse(body["spec"])
    deleting = bool(metadata.get("deletionTimestamp"))
    ledger, refusal, target, calibration, error, served = None, None, None, None, None, None
    image = children.worker_image(spec, WORKER_IMAGE)
    if isinstance(spec.privacy, PrivacySpec):
        ref = BudgetRef(owner.namespace, spec.privacy.budget_ref)
        ledger = next(iter(found.ledgers.get(ref, ())), None)
        claim = ledger.claim(f"{owner.uid}/{spec.versions.training}") if ledger is not None else None
        epsilon, delta = (claim.epsilon, claim.delta) if claim is not None else (spec.privacy.epsilon, spec.privacy.delta)
        try:
            target = plan(spec, epsilon, delta)
            if not deleting:  # settling on deletion needs only the mechanisms the ledger recorded
                calibration = await current.calibrator.calibrate(target)
        except ValueError as failure:  # the data cannot be sized, or the target ε cannot be met
            error = str(failure)
        refusal = _refusal(current, ref, ledger, owner, spec, image)
    elif spec.public:
        refusal = _public_refusal(current, found, owner, spec)
    if spec.model.from_round is not None:
        served = _round(owner.namespace, spec.model.from_round, found)
    start = _start(current, owner, spec.model.start, found) if spec.model.start is not None else None

    def own(index: Index, kind: str) -> dict[str, Mapping[str, Any]]:
        return written.over(kind, {child["metadata"]["name"]: child for child in _all(index, owner.uid)})

    config_maps = own(found.config_maps, "ConfigMap")
    return Snapshot(
        owner=owner,
        generation=int(metadata.get("generation") or 0),
        deleting=deleting,
        finalized=FINALIZER in (metadata.get("finalizers") or ()),
        rotation=(metadata.get("annotations") or {}).get(ROTATE_ANNOTATION),
        spec=spec,
        image=image,
        own_code=image == WORKER_IMAGE and spec.model.architecture is not None and spec.model.entrypoint is None,
        ledger=ledger,
        refusal=refusal,
        plan=target,
        calibration=calibration,
        calibration_error=error,
        jobs=own(found.jobs, "Job"),
        pods=tuple(_all(found.pods, owner.uid)),
        deployment=own(found.deployments, "Deployment").get(owner.name),
        service=own(found.services, "Service").get(owner.name),
        pvc=own(found.pvcs, "PersistentVolumeClaim").get(children.pvc_name(owner.name)),
        results=config_maps.get(children.results_name(owner.name)),
        secrets=own(found.secrets, "Secret"),
        network_policies=own(found.network_policies, "NetworkPolicy"),
        metrics_namespace=METRICS_NAMESPACE,
        now=datetime.now(UTC),
        artifacts_storage=ARTIFACTS_STORAGE,
        allow_list=config_maps.get(children.allow_list_name(owner.name)),
        client_limits=client_limits(body["spec"].get("serving") or {}),
        round=served,
        start=start,
    )


async def with_stored_jobs_and_pods(current: Runtime, s: Snapshot) -> Snapshot:
    """``s`` with the model's Jobs and pods as the API server stores them now (quorum lists).

    A deleted model waits on its train Jobs and pods; an index can keep a child whose deletion its
    watch never delivered (seen once in a burst of 1000 deletions; a watch that resumed by listing
    again is the likely cause, not confirmed), and the model would wait on that child for ever.
    """
    selector = children.selector(s.owner)

    def listed() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return kube.jobs(current.client, s.owner.namespace, selector), kube.pods(current.client, s.owner.namespace, selector)

    jobs, pods = await asyncio.to_thread(listed)
    return replace(s, jobs={job["metadata"]["name"]: job for job in jobs}, pods=tuple(pods))


def _refusal(current: Runtime, ref: BudgetRef, ledger: Ledger | None, owner: children.Owner, spec: ModelSpecs,
             image: str) -> Refusal | None:  # fmt: skip
    """Why the model may not claim from its budget; a budget whose ledger is indexed but whose data declaration
    has not been recorded yet (its first event still queued at startup) refuses until it is: no claim is ever
    made before the budget's coverage is known."""
    if ledger is not None and not current.budgets.knows(ref):
        return Refusal(NOT_OBSERVED, f"PrivacyBudget {ref.name}: its spec.data is not observed yet")
    start = spec.model.start.file if spec.model.start is not None else None
    protecting = current.budgets.protecting(owner.namespace, start) if start is not None else ()
    if protecting:
        return Refusal(START_PROTECTED, f"spec.model.from.file {start} is protected by PrivacyBudget "
                       f"{', '.join(protecting)}: a file a budget protects cannot start a training as public weights")  # fmt: skip
    evaluation = spec.evaluation.source if spec.evaluation is not None else None
    assert spec.data is not None  # a model that claims trains (CEL rules)
    return current.budgets.refusal(ref, KIND, owner.namespace, spec.data.source, image, WORKER_IMAGE, evaluation)


def _public_refusal(current: Runtime, found: Children, owner: children.Owner, spec: ModelSpecs) -> Refusal | None:
    """Why the public model may not read its data now: a budget of the namespace whose spec the operator has not
    recorded yet (the budget watch lists every budget before any model is handled, so this passes by itself), or
    the budgets that protect any of the data it declares public: its training data, its evaluation source, and a
    file it starts from."""
    unrecorded = current.budgets.unrecorded(found.ledgers, owner.namespace)
    if unrecorded:
        return Refusal(NOT_OBSERVED, f"the spec of PrivacyBudget {', '.join(unrecorded)} is not observed yet: a public "
                       "training is decided only once every budget of the namespace is known")  # fmt: skip
    for reason, field, source in declared_public(spec):
        protecting = current.budgets.protecting(owner.namespace, source)
        if protecting:
            return Refusal(reason, f"{field} {source} is protected by PrivacyBudget {', '.join(protecting)}: data a "
                           "budget of the namespace protects cannot be read without differential privacy")  # fmt: skip
    return None


def declared_public(spec: ModelSpecs) -> tuple[tuple[str, str, str], ...]:
    """What a public model reads that its spec declares public, as (refusal reason, field, source): its training
    data, its evaluation source, and a file it starts from."""
    assert spec.data is not None  # a model that trains has spec.data (a CEL rule)
    declared = [(DATA_PROTECTED, "spec.data.source", spec.data.source)]
    if spec.evaluation is not None:
        declared.append((EVALUATION_PROTECTED, "spec.data.evaluation.source", spec.evaluation.source))
    if spec.model.start is not None and spec.model.start.file is not None:
        declared.append((START_PROTECTED, "spec.model.from.file", spec.model.start.file))
    return tuple(declared)
