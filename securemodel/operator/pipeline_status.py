"""A SecureModel after its budget stage, decided from its children as read (pure: no API calls).

The stages, in order: train Job → compress Job → serving Deployment. Each is read as a
:class:`JobState` (or the Deployment's status) and turned into an :class:`Outcome`:
``status.phase``, the conditions ``Trained`` / ``Compressed`` / ``Ready`` (plus
``BudgetReserved`` once the claim is settled), and the ``privacy`` and ``model`` blocks.

The claim is settled from the train pod's termination message (the worker's
``TrainResult``): :func:`settlement` says whether to commit (and how much) or release.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from securemodel.api.secure_model import Phase
from securemodel.operator.claim_status import BUDGET_RESERVED
from securemodel.operator.status import READY, Condition, Outcome
from securemodel.privacy import dp_sgd_epsilon

TRAINED: Final = "Trained"
COMPRESSED: Final = "Compressed"
COMMITTED: Final = "Committed"
NEW_VERSION: Final = "NewVersion"


class JobPhase(StrEnum):
    PENDING = "Pending"  # created, its pod not started (not scheduled, image, init container)
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobState:
    """A Job of one worker as read: its phase, its worker's result, and whether the worker container ever started."""

    phase: JobPhase
    result: Mapping[str, Any] | None
    started: bool
    message: str = ""


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


def _container_status(pod: Mapping[str, Any], container: str) -> Mapping[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == container), None)


def _started(status: Mapping[str, Any] | None) -> bool:
    if status is None:
        return False
    state = status.get("state") or {}
    last = status.get("lastState") or {}
    return any(value is not None for value in (state.get("running"), state.get("terminated"), last.get("terminated")))


def _terminated(status: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    if status is None:
        return None
    return (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")


def _pending_reason(pod: Mapping[str, Any]) -> str:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return f"pod {pod['metadata']['name']} is not scheduled: {condition.get('message') or condition.get('reason')}"
    for status in (pod.get("status") or {}).get("initContainerStatuses") or []:
        waiting = (status.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") not in (None, "PodInitializing"):
            return f"pod {pod['metadata']['name']}: {waiting.get('reason')}: {waiting.get('message', '')}".strip()
    return ""


def job_state(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], container: str, kind: str) -> JobState:
    """The state of a worker Job from the Job and its pods (at most one: ``backoffLimit: 0``)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    started, result, message = False, None, ""
    for pod in pods:
        cstatus = _container_status(pod, container)
        started = started or _started(cstatus)
        terminated = _terminated(cstatus)
        if terminated is not None:
            result = parse_result(terminated.get("message"), kind) or result
            if terminated.get("exitCode") not in (0, None) and not message:
                message = f"{container} exited {terminated.get('exitCode')} ({terminated.get('reason', '')})"
        if not started:
            message = _pending_reason(pod) or message
    if status.get("succeeded") or "Complete" in conditions:
        phase = JobPhase.SUCCEEDED
    elif status.get("failed") or "Failed" in conditions:
        phase = JobPhase.FAILED
        failed = conditions.get("Failed") or {}
        message = message or f"{failed.get('reason', 'Failed')}: {failed.get('message', '')}".strip()
    elif started:
        phase = JobPhase.RUNNING
    else:
        phase = JobPhase.PENDING
    return JobState(phase, result, started, message)


@dataclass(frozen=True)
class Settlement:
    """What to do with the model's Reserved claim once training is over."""

    commit: bool
    epsilon: float  # to commit (0 for a release)
    data_touched: bool


def settlement(train: JobState, claimed: float, delta: float, accountant: str) -> Settlement:
    """Commit the ε of the steps actually run if the worker touched the data, else release.

    Without a result (the container was killed before writing one) a started worker may
    have touched the data: the whole claim is committed, the only safe bound.
    """
    result = train.result
    if result is None:
        if train.started:
            return Settlement(True, claimed, True)
        return Settlement(False, 0.0, False)
    if not result.get("dataTouched"):
        return Settlement(False, 0.0, False)
    return Settlement(True, spent_epsilon(result, claimed, delta, accountant), True)


def spent_epsilon(result: Mapping[str, Any], claimed: float, delta: float, accountant: str) -> float:
    """The accountant's ε for the noisy steps the worker ran, never above the claim it was calibrated within."""
    steps = int(result.get("steps") or 0)
    if steps <= 0:
        return 0.0
    epsilon = dp_sgd_epsilon(float(result["noiseMultiplier"]), float(result["sampleRate"]), steps, delta, accountant)
    return min(float(epsilon), float(claimed))


def committed_condition(budget: str, epsilon: float) -> Condition:
    return Condition(BUDGET_RESERVED, True, COMMITTED, f"ε={epsilon:.6g} spent and committed to PrivacyBudget {budget}")


def _not_ready(phase: Phase, reason: str, message: str, *conditions: Condition, warning: bool = False, **fields: Any) -> Outcome:
    return Outcome(phase, Condition(READY, False, reason, message), tuple(conditions), dict(fields), warning)


def training(train: JobState, job_name: str) -> Outcome:
    """Training is under way (the claim stays Reserved)."""
    if train.phase is JobPhase.PENDING:
        message = f"Job {job_name} created; {train.message or 'its pod has not started'}"
        return _not_ready(Phase.TRAINING, "TrainingPending", message, Condition(TRAINED, False, "Pending", message))
    message = f"Job {job_name} is training with DP-SGD"
    return _not_ready(Phase.TRAINING, "Training", message, Condition(TRAINED, False, "Training", message))


def training_failed(train: JobState, job_name: str, settled: Condition, privacy: Mapping[str, Any]) -> Outcome:
    error = (train.result or {}).get("error") or train.message or "the training pod failed"
    message = f"Job {job_name} failed: {error}"
    return _not_ready(
        Phase.FAILED,
        "TrainingFailed",
        message,
        Condition(TRAINED, False, "TrainingFailed", message),
        settled,
        warning=True,
        privacy=dict(privacy),
    )


def trained_fields(result: Mapping[str, Any], epsilon: float, delta: float, accountant: str) -> dict[str, Any]:
    """``status.privacy`` and ``status.model`` from a successful TrainResult."""
    return {
        "privacy": {
            "epsilonSpent": epsilon,
            "delta": delta,
            "noiseMultiplier": result.get("noiseMultiplier"),
            "sampleRate": result.get("sampleRate"),
            "steps": int(result.get("steps") or 0),
            "accountant": accountant,
        },
        "model": {
            "digest": result.get("digest"),
            "sizeBytes": int(result.get("sizeBytes") or 0),
            "accuracy": result.get("accuracy"),
        },
    }


def trained_condition(result: Mapping[str, Any], epsilon: float) -> Condition:
    steps = int(result.get("steps") or 0)
    accuracy = result.get("accuracy")
    return Condition(TRAINED, True, "Succeeded", f"{steps} DP-SGD steps, ε={epsilon:.6g}, validation accuracy {accuracy}")


def new_version(budget: str, training: str) -> Outcome:
    """The spec asks for training version ``training``, which holds no granted claim: back to the budget stage.

    The previous version's privacy and model blocks go (None deletes them in the merge patch):
    the budget stage writes the new claim's.
    """
    text = f"the spec changed: training version {training} claims its ε from PrivacyBudget {budget}"
    return Outcome(
        Phase.WAITING_FOR_BUDGET,
        Condition(READY, False, NEW_VERSION, text),
        tuple(Condition(kind, False, NEW_VERSION, text) for kind in (BUDGET_RESERVED, TRAINED, COMPRESSED)),
        {"privacy": None, "model": None},
    )


def finishing_left_version(outcome: Outcome, version: str) -> Outcome:
    """``outcome`` of the training of ``version``, which the spec left: it runs to its end before the new one."""
    note = f"; the spec changed, and its new version trains once training version {version} has ended"
    ready = Condition(READY, outcome.ready.status, outcome.ready.reason, outcome.ready.message + note)
    return Outcome(outcome.phase, ready, outcome.conditions, outcome.fields, outcome.warning)


def replacing_left_version(job_name: str, version: str) -> Outcome:
    """The spec left training version ``version`` before its pod started: its Job goes, then its claim."""
    message = (
        f"the spec changed before training version {version} started: Job {job_name} is deleted, "
        "and its claim released once it is gone"
    )
    return _not_ready(Phase.TRAINING, NEW_VERSION, message, Condition(TRAINED, False, NEW_VERSION, message))


def not_compressed(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with the compressed model's fields deleted: the version being compressed has none yet."""
    gone = dict.fromkeys(("compressedSizeBytes", "compressedAccuracy", "sparsity"))
    return {**fields, "model": {**fields.get("model", {}), **gone}}


def compressing(compress: JobState, job_name: str) -> Outcome:
    message = f"Job {job_name} is pruning and quantising the trained model"
    return _not_ready(Phase.COMPRESSING, "Compressing", message, Condition(COMPRESSED, False, "Compressing", message))


def compression_failed(compress: JobState, job_name: str) -> Outcome:
    error = (compress.result or {}).get("error") or compress.message or "the compression pod failed"
    message = f"Job {job_name} failed: {error}"
    return _not_ready(
        Phase.FAILED, "CompressionFailed", message, Condition(COMPRESSED, False, "CompressionFailed", message), warning=True
    )


def compressed_fields(result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "digest": result.get("digest"),
            "compressedSizeBytes": int(result.get("compressedSizeBytes") or 0),
            "compressedAccuracy": result.get("compressedAccuracy"),
            "sparsity": result.get("sparsity"),
        }
    }


def compressed_condition(result: Mapping[str, Any]) -> Condition:
    return Condition(
        COMPRESSED,
        True,
        "Succeeded",
        f"{result.get('sizeBytes')} → {result.get('compressedSizeBytes')} bytes "
        f"(sparsity {result.get('sparsity')}, {result.get('quantization')}), accuracy {result.get('compressedAccuracy')}",
    )


def serve_failure(pods: Sequence[Mapping[str, Any]]) -> str:
    """Why serving pods crash, from their termination message (empty if none does)."""
    for pod in pods:
        status = _container_status(pod, "serve")
        if status is None:
            continue
        terminated = _terminated(status)
        waiting = (status.get("state") or {}).get("waiting") or {}
        if terminated is not None and terminated.get("exitCode") not in (0, None):
            message = (terminated.get("message") or "").strip().splitlines()
            detail = message[-1] if message else terminated.get("reason", "")
            return f"serving pod {pod['metadata']['name']} exited {terminated.get('exitCode')}: {detail}"
        if waiting.get("reason") in ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"):
            return f"serving pod {pod['metadata']['name']}: {waiting['reason']}: {waiting.get('message', '')}".strip()
    return ""


def serving(deployment: Mapping[str, Any], replicas: int, failure: str) -> Outcome:
    """Deploying until the Deployment has ``replicas`` available pods of its current template."""
    status = deployment.get("status") or {}
    name = deployment["metadata"]["name"]
    current = (status.get("observedGeneration") or 0) >= (deployment["metadata"].get("generation") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if replicas == 0 and current:
        return Outcome(Phase.SERVING, Condition(READY, True, "ScaledToZero", f"Deployment {name} has 0 replicas"))
    if current and updated >= replicas and available >= replicas:
        return Outcome(Phase.SERVING, Condition(READY, True, "Serving", f"{available}/{replicas} replicas available"))
    if failure:
        return _not_ready(Phase.DEPLOYING, "ServingFailed", failure, warning=True)
    return _not_ready(Phase.DEPLOYING, "Deploying", f"Deployment {name}: {available}/{replicas} replicas available")
