"""The one rule that ends a claim: what the ledger charges, decided from the operator and the kubelet alone (pure).

Privacy guarantee: a claim is *Released* only if the operator can prove that no container of
its train Job ever ran. The proof has three parts:

1. the operator marks the claim ``dispatched`` in the ledger *before* it creates the Job, so a
   claim without the mark never had a pod;
2. every train pod carries the settlement finalizer, which the operator removes only after the
   ledger holds the pod's ``started`` mark if the kubelet showed any of its containers run
   (:func:`securemodel.operator.secure_model.jobs.container_ran`), so no pod that ran vanishes
   unrecorded — whether it succeeded, was evicted, or its Job or pod was deleted;
3. a dispatched claim is released only once its Job was stopped (suspended: the Job controller
   creates no pod any more) or is gone, and every pod of it is gone (both checked by quorum reads
   just before the write); the ledger itself refuses to release a started claim.

Every other ending is *Committed*. What is committed comes from the operator's own calibration
(σ, q and the planned steps): the whole claim, unless the pod ran the project's own code (its
worker image and a built-in architecture) and reported, on success, fewer steps than planned;
a user image or entrypoint can write any report, so its report is never read for the charge.
A Reserved claim whose Job finished or vanished is settled, never trained again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from securemodel.operator.secure_model.jobs import JobPhase, JobView, PodView
from securemodel.privacy import Claim, ClaimState


class Act(StrEnum):
    KEEP = "Keep"  # nothing to do now
    DISPATCH = "Dispatch"  # (re)create the train Job: none exists and no container of the claim ever ran
    COMMIT = "Commit"
    STOP = "Stop"  # suspend the Job (no container of it ran): released once its pods are gone
    RELEASE = "Release"


@dataclass(frozen=True)
class Settlement:
    act: Act
    epsilon: float = 0.0  # to commit
    why: str = ""
    steps: int | None = None  # a credited commit: the steps the project's own code ran


def settle(
    claim: Claim,
    job: JobView | None,
    orphans: tuple[PodView, ...],
    *,
    wanted: bool,
    deleting: bool,
    own_code: bool,
    planned_steps: int | None,
    credit: Callable[[int], float] | None,
) -> Settlement:
    """How to end ``claim`` now, if at all.

    ``job`` is its train Job (None if it does not exist), ``orphans`` its train pods whose Job is
    gone. ``wanted``: the claim is for the spec's training version and the model is not being
    deleted. ``credit(steps)`` is the accountant's ε for ``steps`` at the claim's own σ and q
    (None when the operator no longer knows them: the whole claim is committed).

    A wanted claim with no Job and no pod, of which no container ever ran, gets its Job
    (again): the operator may have stopped between marking it dispatched and creating the
    Job, and a run that never started spent nothing. A stopped (suspended) Job is never
    resumed: its claim is released.
    """
    if claim.state is ClaimState.WAITING:
        return Settlement(Act.KEEP) if wanted else Settlement(Act.RELEASE, why="withdrawn before it was granted")
    if claim.state is not ClaimState.RESERVED:
        return Settlement(Act.KEEP)
    if claim.dispatched is None:
        return Settlement(Act.DISPATCH) if wanted else Settlement(Act.RELEASE, why="no train Job was ever created")
    pods = (*(job.pods if job else ()), *orphans)
    ran = claim.started is not None or any(pod.ran for pod in pods)
    whole = Settlement(Act.COMMIT, claim.epsilon, "a container of the train Job ran: the whole claim")
    if not ran:
        if job is None and not pods:
            if wanted:
                return Settlement(Act.DISPATCH)
            return Settlement(Act.RELEASE, why="the train Job is gone and no container of it ever ran")
        if job is not None and job.suspended:
            if not pods:
                return Settlement(Act.RELEASE, why=job.message or "the train Job was stopped before any container ran")
            return Settlement(Act.STOP, why=job.message or "stopping")
        finished = job is None or job.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED)
        if finished or not wanted or (job is not None and job.image_failure):
            why = job.image_failure if job is not None and job.image_failure else "no container of it ran"
            return Settlement(Act.STOP, why=why)
        return Settlement(Act.KEEP)
    finished = job is None or job.phase in (JobPhase.SUCCEEDED, JobPhase.FAILED)
    if not finished:
        if deleting:
            return Settlement(Act.COMMIT, claim.epsilon, "the model is deleted while its training runs")
        return Settlement(Act.KEEP)
    return _credited(claim, job, orphans, own_code, planned_steps, credit) or whole


def _credited(
    claim: Claim,
    job: JobView | None,
    orphans: tuple[PodView, ...],
    own_code: bool,
    planned_steps: int | None,
    credit: Callable[[int], float] | None,
) -> Settlement | None:
    """The ε of the steps a successful run of the project's own code reported, if that may be trusted:
    exactly one pod of the Job ran, it exited 0, and no other pod of the claim ran."""
    if not own_code or credit is None or planned_steps is None or job is None or job.phase is not JobPhase.SUCCEEDED:
        return None
    if any(pod.ran for pod in orphans):
        return None
    ran = [pod for pod in job.pods if pod.ran]
    if len(ran) != 1 or ran[0].exit_code != 0 or ran[0].result is None:
        return None
    steps = ran[0].result.get("steps")
    if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps <= planned_steps:
        return None
    epsilon = min(float(credit(steps)), claim.epsilon)
    return Settlement(Act.COMMIT, epsilon, f"{steps} of {planned_steps} planned steps ran", steps)
