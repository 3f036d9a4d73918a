"""What the kubelet and the Job controller say about a worker Job and its pods (pure readings).

The one fact the ledger depends on is :attr:`PodView.ran`: whether any container of the pod
(init containers included: they run the same image) was ever created by the container
runtime. It is read from the kubelet's container statuses, never from what the container
wrote: a container that got a ``containerID`` may have run code, so it counts as ran; a
container the runtime never created (image not pulled, pod not scheduled, the kubelet's
synthetic ``ContainerStatusUnknown`` for a container it never started) has none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from securemodel.operator.secure_model.children import ISOLATION_GATE, SETTLEMENT_FINALIZER

# Waiting reasons of a container whose image the kubelet cannot get: the pod never runs as it is.
IMAGE_FAILURES: Final = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"})


class JobPhase(StrEnum):
    PENDING = "Pending"  # created, no container of its pods has run yet
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class PodView:
    """One pod of a worker Job, as the kubelet reported it."""

    name: str
    ran: bool  # a container of it was ever created by the runtime
    terminal: bool  # phase Succeeded or Failed: no container of it runs any more
    deleting: bool
    scheduled: bool
    held: bool  # carries the settlement finalizer
    exit_code: int | None  # of the worker container, once it terminated
    result: Mapping[str, Any] | None  # the worker's JSON result from its termination message
    image_failure: str  # why its image cannot be pulled ("" if it can)
    pending: str  # why it has not started ("" if nothing to say)

    @property
    def settled(self) -> bool:
        """No container of it can run any more: it ended, or it is going without ever being scheduled."""
        return self.terminal or (self.deleting and not self.scheduled)

    @property
    def keeps_owner(self) -> bool:
        """Whether the model (or round) being deleted must wait for it: it may still run, or it is held for
        settlement. One that ended and is not held (its claim recorded, or a pod that merely carries the
        labels) keeps nothing."""
        return self.held or not self.settled


@dataclass(frozen=True)
class JobView:
    """A worker Job (None when it does not exist) and its pods."""

    name: str
    phase: JobPhase
    pods: tuple[PodView, ...]
    message: str = ""
    suspended: bool = False  # the operator stopped it: the Job controller creates no pod any more

    @property
    def ran(self) -> bool:
        return any(pod.ran for pod in self.pods)

    @property
    def image_failure(self) -> str:
        return next((pod.image_failure for pod in self.pods if pod.image_failure and not pod.ran), "")

    @property
    def result(self) -> Mapping[str, Any] | None:
        return next((pod.result for pod in self.pods if pod.result is not None), None)


def parse_result(message: str | None, kind: str) -> dict[str, Any] | None:
    """The worker's JSON result (``kind`` TrainResult or CompressResult) from a termination message."""
    for line in reversed((message or "").splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("kind") == kind:
            return value
    return None


def container_ran(status: Mapping[str, Any]) -> bool:
    """Whether the runtime ever created this container (so code of its image may have run)."""
    if status.get("containerID") or status.get("started"):
        return True
    for state in (status.get("state") or {}, status.get("lastState") or {}):
        if state.get("running") is not None:
            return True
        terminated = state.get("terminated")
        if terminated is not None and (terminated.get("containerID") or terminated.get("startedAt")):
            return True
    return False


def _terminated(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if status is None:
        return None
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")


def _pending(pod: Mapping[str, Any], statuses: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(image failure, other reason) of a pod that has not started."""
    name = pod["metadata"]["name"]
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in IMAGE_FAILURES:
            return f"pod {name}: {waiting['reason']}: {waiting.get('message', '')}".strip(), ""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return "", f"pod {name} is not scheduled: {condition.get('message') or condition.get('reason')}"
    for status in statuses:
        gate = (status.get("state") or {}).get("terminated") or {}
        if status.get("name") == ISOLATION_GATE and gate.get("exitCode") not in (None, 0):
            return "", f"pod {name}: {(gate.get('message') or '').strip() or 'NetworkNotIsolated'}"
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") not in (None, "PodInitializing", "ContainerCreating"):
            return "", f"pod {name}: {waiting.get('reason')}: {waiting.get('message', '')}".strip()
    return "", ""


def pod_view(pod: Mapping[str, Any], container: str, kind: str) -> PodView:
    """A pod of a worker Job whose worker container is ``container`` and writes a ``kind`` result."""
    metadata, status = pod["metadata"], pod.get("status") or {}
    statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    worker = next((s for s in status.get("containerStatuses") or [] if s.get("name") == container), None)
    terminated = _terminated(worker)
    # The isolation gate runs the operator's image with no data mounted: its run is not the workload's.
    ran = any(container_ran(s) for s in statuses if s.get("name") != ISOLATION_GATE)
    image_failure, pending = ("", "") if ran else _pending(pod, statuses)
    return PodView(
        name=metadata["name"],
        ran=ran,
        terminal=status.get("phase") in ("Succeeded", "Failed"),
        deleting=bool(metadata.get("deletionTimestamp")),
        scheduled=bool((pod.get("spec") or {}).get("nodeName")),
        held=SETTLEMENT_FINALIZER in (metadata.get("finalizers") or ()),
        exit_code=terminated.get("exitCode") if terminated is not None else None,
        result=parse_result(terminated.get("message"), kind) if terminated is not None else None,
        image_failure=image_failure,
        pending=pending,
    )


def job_view(job: Mapping[str, Any], pods: Sequence[PodView]) -> JobView:
    """A worker Job from the Job controller's status and its pods (``backoffLimit: 0``: at most one runs)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    name = job["metadata"]["name"]
    message = ""
    for pod in pods:
        if pod.exit_code not in (0, None):
            message = f"pod {pod.name} exited {pod.exit_code}"
        message = message or pod.image_failure or pod.pending
    if status.get("succeeded") or "Complete" in conditions:
        phase = JobPhase.SUCCEEDED
    elif status.get("failed") or "Failed" in conditions:
        phase = JobPhase.FAILED
        failed = conditions.get("Failed") or {}
        message = message or f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip()
    elif any(pod.ran for pod in pods):
        phase = JobPhase.RUNNING
    else:
        phase = JobPhase.PENDING
    return JobView(name, phase, tuple(pods), message, bool((job.get("spec") or {}).get("suspend")))
