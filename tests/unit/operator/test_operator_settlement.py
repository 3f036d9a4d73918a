"""The settlement rule, table-driven: what ends a claim, decided from the operator's and the kubelet's facts only."""

from dataclasses import replace

import pytest

from securemodel.operator.secure_model.jobs import JobPhase, JobView, PodView
from securemodel.operator.secure_model.settlement import Act, settle
from securemodel.privacy import Claim, ClaimState, Consumer

CLAIM = Claim(Consumer("SecureModel", "ns", "m", "uid", "v1"), 2.0, 1e-5, ClaimState.RESERVED, "t0")
DISPATCHED = replace(CLAIM, dispatched="t1")
STARTED = replace(DISPATCHED, started="t2")
PLANNED = 100


def credit(steps: int) -> float:
    return 2.0 * steps / PLANNED  # a stand-in accountant, monotone in the steps


def pod(*, ran: bool, terminal: bool = True, deleting: bool = False, scheduled: bool = True, exit_code: int | None = 0,
        steps: object = None, image_failure: str = "") -> PodView:  # fmt: skip
    result = {"kind": "TrainResult", "status": "Succeeded", "steps": steps} if steps is not None else None
    return PodView("m-train-v1-x", ran, terminal, deleting, scheduled, True, exit_code if ran else None, result,
                   image_failure, "")  # fmt: skip


def job(phase: JobPhase, *pods: PodView, suspended: bool = False) -> JobView:
    return JobView("m-train-v1", phase, pods, "", suspended)


NEVER_RAN_PENDING = pod(ran=False, terminal=False)
PULL_FAILED = pod(ran=False, terminal=False, image_failure="pod p: ErrImageNeverPull")
SUCCEEDED_OWN = pod(ran=True, steps=60)
EVICTED = pod(ran=True, deleting=True, exit_code=137)

CASES = [
    # (id, claim, job, orphans, wanted, deleting, own_code, act, epsilon)
    ("waiting claim of the spec's version waits", replace(CLAIM, state=ClaimState.WAITING), None, (), True, False, True, Act.KEEP, 0.0),
    ("waiting claim left by the spec is withdrawn", replace(CLAIM, state=ClaimState.WAITING), None, (), False, False, True, Act.RELEASE, 0.0),
    ("granted claim gets its Job", CLAIM, None, (), True, False, True, Act.DISPATCH, 0.0),
    ("granted claim left before dispatch is released", CLAIM, None, (), False, False, True, Act.RELEASE, 0.0),
    ("dispatched, Job never created (crash), nothing ran: Job again", DISPATCHED, None, (), True, False, True, Act.DISPATCH, 0.0),
    ("dispatched, pending pod: wait", DISPATCHED, job(JobPhase.PENDING, NEVER_RAN_PENDING), (), True, False, True, Act.KEEP, 0.0),
    ("image cannot be pulled: stop", DISPATCHED, job(JobPhase.PENDING, PULL_FAILED), (), True, False, True, Act.STOP, 0.0),
    ("stopped and its pods gone: release", DISPATCHED, job(JobPhase.PENDING, suspended=True), (), True, False, True, Act.RELEASE, 0.0),
    ("stopped, a pod still going: wait for it", DISPATCHED, job(JobPhase.PENDING, NEVER_RAN_PENDING, suspended=True), (), True, False, True, Act.STOP, 0.0),
    ("left version that never ran: stop", DISPATCHED, job(JobPhase.PENDING, NEVER_RAN_PENDING), (), False, False, True, Act.STOP, 0.0),
    ("left version, Job gone and nothing ran: release", DISPATCHED, None, (), False, False, True, Act.RELEASE, 0.0),
    ("running: wait", DISPATCHED, job(JobPhase.RUNNING, pod(ran=True, terminal=False)), (), True, False, True, Act.KEEP, 0.0),
    ("running while the model is deleted: whole claim", DISPATCHED, job(JobPhase.RUNNING, pod(ran=True, terminal=False)), (), False, True, True, Act.COMMIT, 2.0),
    ("own code succeeded with fewer steps: credited", DISPATCHED, job(JobPhase.SUCCEEDED, SUCCEEDED_OWN), (), True, False, True, Act.COMMIT, 1.2),
    ("user image succeeded, same report: whole claim", DISPATCHED, job(JobPhase.SUCCEEDED, SUCCEEDED_OWN), (), True, False, False, Act.COMMIT, 2.0),
    ("forged report of more steps than planned: whole claim", DISPATCHED, job(JobPhase.SUCCEEDED, pod(ran=True, steps=PLANNED + 1)), (), True, False, True, Act.COMMIT, 2.0),
    ("non-integer steps: whole claim", DISPATCHED, job(JobPhase.SUCCEEDED, pod(ran=True, steps="1")), (), True, False, True, Act.COMMIT, 2.0),
    ("failed after running: whole claim", DISPATCHED, job(JobPhase.FAILED, pod(ran=True, exit_code=1, steps=5)), (), True, False, True, Act.COMMIT, 2.0),
    ("evicted pod: whole claim", DISPATCHED, job(JobPhase.FAILED, EVICTED), (), True, False, True, Act.COMMIT, 2.0),
    ("Job deleted after success, pod held: whole claim", DISPATCHED, None, (SUCCEEDED_OWN,), True, False, True, Act.COMMIT, 2.0),
    ("pod deleted after success: credited from the Job's own pod", DISPATCHED, job(JobPhase.SUCCEEDED, replace(SUCCEEDED_OWN, deleting=True)), (), True, False, True, Act.COMMIT, 1.2),
    ("started, then Job and pods vanished: whole claim, never trained again", STARTED, None, (), True, False, True, Act.COMMIT, 2.0),
    ("started mark, pods show nothing: still committed", STARTED, job(JobPhase.FAILED), (), True, False, True, Act.COMMIT, 2.0),
    ("committed claims are final", replace(STARTED, state=ClaimState.COMMITTED), None, (), True, False, True, Act.KEEP, 0.0),
]


@pytest.mark.parametrize(
    ("claim", "job_view", "orphans", "wanted", "deleting", "own_code", "act", "epsilon"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_settlement(claim: Claim, job_view: JobView | None, orphans: tuple[PodView, ...], wanted: bool, deleting: bool,
                    own_code: bool, act: Act, epsilon: float) -> None:  # fmt: skip
    ending = settle(claim, job_view, orphans, wanted=wanted, deleting=deleting, own_code=own_code,
                    planned_steps=PLANNED, credit=credit)  # fmt: skip
    assert ending.act is act
    assert ending.epsilon == pytest.approx(epsilon)


def test_nothing_that_ran_is_ever_released() -> None:
    """Over every shape of Job and pods, a claim whose container ran is never released or dispatched again."""
    jobs = [None, *(job(phase, pod(ran=True, terminal=t)) for phase in JobPhase for t in (True, False)),
            job(JobPhase.PENDING, suspended=True)]  # fmt: skip
    for claim in (DISPATCHED, STARTED):
        for view in jobs:
            for orphans in ((), (pod(ran=True),)):
                ran = claim.started or any(p.ran for p in (*(view.pods if view else ()), *orphans))
                for wanted, deleting in ((True, False), (False, False), (False, True)):
                    ending = settle(claim, view, orphans, wanted=wanted, deleting=deleting, own_code=True,
                                    planned_steps=PLANNED, credit=credit)  # fmt: skip
                    if ran:
                        assert ending.act in (Act.KEEP, Act.COMMIT), (claim, view, orphans, wanted)
