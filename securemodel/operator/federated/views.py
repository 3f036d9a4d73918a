"""What the kubelet and the Job controller say about a round's aggregator and SuperNodes (pure readings)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from securemodel.api.federated_round import ParticipantState
from securemodel.operator.federated import children
from securemodel.operator.federated.snapshot import Silo, Snapshot
from securemodel.operator.secure_model.jobs import JobPhase, JobView, PodView, job_view, pod_view
from securemodel.workers.federated.contract import RESULT_KIND, SILO_REPORT_KIND

AGGREGATOR_RESULT: Final = "aggregator"


def _controlled_by(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    uid = job["metadata"].get("uid")
    return any(ref.get("uid") == uid and ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or ())


def supernode_views(silo: Silo) -> tuple[JobView | None, tuple[PodView, ...]]:
    """The silo's SuperNode Job with the pods it controls, and its other pods (whose Job is gone)."""
    views = [(p, pod_view(p, children.SUPERNODE, SILO_REPORT_KIND)) for p in silo.pods]
    if silo.job is None:
        return None, tuple(view for _, view in views)
    job = silo.job
    own = [view for pod, view in views if _controlled_by(pod, job)]
    return job_view(job, own), tuple(view for pod, view in views if not _controlled_by(pod, job))


def _stored(s: Snapshot) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, text in ((s.results or {}).get("data") or {}).items():
        try:
            out[key] = json.loads(text)
        except ValueError:
            continue
    return out


def aggregator_view(s: Snapshot) -> JobView | None:
    if s.aggregator is None:
        return None
    pods = [pod_view(p, children.AGGREGATOR, RESULT_KIND) for p in s.aggregator_pods if _controlled_by(p, s.aggregator)]
    return job_view(s.aggregator, pods)


def final_result(s: Snapshot) -> Mapping[str, Any] | None:
    """The aggregator's final result: from its pod, else as recorded; None while it has not ended."""
    view = aggregator_view(s)
    if view is not None and view.result is not None and view.result.get("status") != "Running":
        return view.result
    stored = _stored(s).get(AGGREGATOR_RESULT)
    if stored is not None:
        return stored
    if view is not None and view.phase is JobPhase.FAILED:
        return {"kind": RESULT_KIND, "status": "Failed", "error": view.message or "the aggregator Job failed"}
    return None


def participant_state(s: Snapshot, silo: Silo, result: Mapping[str, Any] | None) -> ParticipantState:
    """Where ``silo`` stands: from the aggregator's history once it has one, else from the kubelet."""
    history = (result or {}).get("history") or []
    if history:
        last = history[-1]
        if silo.spec.name in (last.get("submitted") or ()):
            return ParticipantState.SUBMITTED
        if silo.spec.name in (last.get("dropped") or ()):
            return ParticipantState.DROPPED
    job, orphans = supernode_views(silo)
    pods = (*(job.pods if job else ()), *orphans)
    if not any(p.ran for p in pods):
        return ParticipantState.PENDING
    if result is None and any(p.ran and not p.terminal and not p.deleting for p in pods):
        return ParticipantState.TRAINING
    return ParticipantState.DROPPED


