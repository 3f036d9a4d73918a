"""Gather a FederatedRound's :class:`~.snapshot.Snapshot` from kopf's in-memory indexes (no LIST per pass).

The indexes (:mod:`.handlers`) hold every Job, Pod, Service, PVC, ConfigMap and Secret labelled
with a round's uid (in the round's namespace and in the silos'), every budget's spec and ledger,
the SecureModels' ``spec.model`` and the rounds' uids and ``spec.rounds``. A stale view is safe
for the same reasons as a SecureModel's (:mod:`securemodel.operator.secure_model.observe`): the
writes that depend on it are checked by the API server or re-read with quorum reads in
:mod:`.act`, and the ledger rules refuse what the budget's fresh state does not allow.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from securemodel.operator.budget.ledger import BudgetRef
from securemodel.operator.federated import children
from securemodel.operator.federated.calibration import silo_plan
from securemodel.operator.federated.children import Start
from securemodel.operator.federated.snapshot import BudgetView, Silo, Snapshot, StartProblem
from securemodel.operator.federated.spec import RoundSpec, parse
from securemodel.operator.federated.views import AGGREGATOR_RESULT
from securemodel.operator.runtime import Runtime
from securemodel.operator.secure_model.children import COMPONENT_LABEL, Owner
from securemodel.operator.settings import ARTIFACTS_STORAGE, FINALIZER, WORKER_IMAGE
from securemodel.privacy import Ledger

Index = kopf.Index[Any, Any]


@dataclass(frozen=True)
class Indexes:
    """The kopf indexes a round reads: its children by round uid, budgets by reference, and its starting points."""

    jobs: Index
    pods: Index
    services: Index
    pvcs: Index
    config_maps: Index
    secrets: Index
    budgets: kopf.Index[BudgetRef, BudgetView]
    ledgers: kopf.Index[BudgetRef, Ledger]
    secure_models: Index  # (namespace, name) -> spec.model
    rounds: Index  # (namespace, name) -> {"uid": metadata.uid, "rounds": spec.rounds}

    @classmethod
    def of(cls, indexes: Mapping[str, Any]) -> Indexes:
        return cls(
            jobs=indexes["round_jobs"],
            pods=indexes["round_pods"],
            services=indexes["round_services"],
            pvcs=indexes["round_pvcs"],
            config_maps=indexes["round_config_maps"],
            secrets=indexes["round_secrets"],
            budgets=indexes["round_budgets"],
            ledgers=indexes["budget_ledgers"],
            secure_models=indexes["round_secure_models"],
            rounds=indexes["round_identities"],
        )


def _all(index: Index, key: Any) -> list[Mapping[str, Any]]:
    return list(index.get(key, ()))


def _first(index: Index, key: Any) -> Any:
    return next(iter(index.get(key, ())), None)


def _where(objects: Iterable[Mapping[str, Any]], namespace: str, name: str) -> Mapping[str, Any] | None:
    return next((o for o in objects if o["metadata"]["name"] == name and o["metadata"]["namespace"] == namespace), None)


def _label(obj: Mapping[str, Any], key: str) -> str:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(key, "")


def resolve_start(owner: Owner, spec: RoundSpec, found: Indexes) -> Start | StartProblem:
    """What the round starts from, or why it cannot start (yet)."""
    if spec.secure_model_ref is not None:
        model = _first(found.secure_models, (owner.namespace, spec.secure_model_ref))
        if model is None:
            return StartProblem("SecureModelNotFound", f"SecureModel {spec.secure_model_ref} does not exist in this "
                                "namespace; the round starts from its architecture once it does")  # fmt: skip
        if model.get("entrypoint") or model.get("image") or not model.get("architecture"):
            return StartProblem("UnsupportedModel", f"SecureModel {spec.secure_model_ref} uses a custom image or "
                                "entrypoint: a federated round runs only built-in architectures next to the silos' data")  # fmt: skip
        params = json.dumps(model.get("params") or {}, sort_keys=True, separators=(",", ":"))
        return Start(architecture=str(model["architecture"]), params=params, source=spec.silos[0].source)
    assert spec.from_round is not None
    previous = _first(found.rounds, (owner.namespace, spec.from_round))
    if previous is None:
        return StartProblem("PreviousRoundNotFound", f"FederatedRound {spec.from_round} does not exist in this namespace")
    uid = str(previous["uid"])
    stored = _where(_all(found.config_maps, uid), owner.namespace, children.results_name(spec.from_round))
    text = ((stored or {}).get("data") or {}).get(AGGREGATOR_RESULT)
    result = json.loads(text) if text else None
    if result is None or result.get("status") == "Running":
        return StartProblem("WaitingForPreviousRound", f"FederatedRound {spec.from_round} has not finished yet",
                            stalled=False)  # fmt: skip
    if result.get("status") != "Succeeded" or not result.get("artifact"):
        return StartProblem("PreviousRoundFailed", f"FederatedRound {spec.from_round} did not succeed: "
                            f"{result.get('error') or 'no global model'}")  # fmt: skip
    return Start(previous_round=spec.from_round, previous_artifact=str(result["artifact"]), previous_uid=uid,
                 previous_rounds=int(previous["rounds"]))  # fmt: skip


async def observe(current: Runtime, body: Mapping[str, Any], found: Indexes) -> Snapshot:
    """The snapshot of the round ``body`` now."""
    metadata = body["metadata"]
    owner = Owner.of(body)
    spec = parse(body["spec"], owner.namespace)
    deleting = bool(metadata.get("deletionTimestamp"))
    jobs, pods = _all(found.jobs, owner.uid), _all(found.pods, owner.uid)
    silos = []
    for silo in spec.silos:
        ref = BudgetRef(silo.namespace, silo.budget_ref)
        plan, calibration, error = None, None, None
        try:
            plan = silo_plan(spec, silo)
            if not deleting:  # settling needs only the mechanisms the ledgers recorded
                calibration = await current.calibrator.calibrate(plan.plan)
        except ValueError as failure:  # the data cannot be sized, or the target ε cannot be met
            error = str(failure)
        job_name = children.supernode_job_name(owner.name, silo.name)
        silos.append(Silo(
            spec=silo,
            budget=_first(found.budgets, ref),
            ledger=_first(found.ledgers, ref),
            plan=plan,
            calibration=calibration,
            error=error,
            job=_where(jobs, silo.namespace, job_name),
            pods=tuple(p for p in pods if p["metadata"]["namespace"] == silo.namespace
                       and _label(p, children.SILO_LABEL) == silo.name and _label(p, COMPONENT_LABEL) == children.SUPERNODE),
        ))  # fmt: skip
    ns = owner.namespace
    return Snapshot(
        owner=owner,
        generation=int(metadata.get("generation") or 0),
        deleting=deleting,
        finalized=FINALIZER in (metadata.get("finalizers") or ()),
        spec=spec,
        start=resolve_start(owner, spec, found),
        silos=tuple(silos),
        aggregator=_where(jobs, ns, children.aggregator_job_name(owner.name)),
        aggregator_pods=tuple(p for p in pods if p["metadata"]["namespace"] == ns
                              and _label(p, COMPONENT_LABEL) == children.AGGREGATOR),  # fmt: skip
        service=_where(_all(found.services, owner.uid), ns, children.service_name(owner.name)),
        pvc=_where(_all(found.pvcs, owner.uid), ns, children.pvc_name(owner.name)),
        results=_where(_all(found.config_maps, owner.uid), ns, children.results_name(owner.name)),
        secrets={(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in _all(found.secrets, owner.uid)},
        image=WORKER_IMAGE,
        now=datetime.now(UTC),
        artifacts_storage=ARTIFACTS_STORAGE,
    )
