"""SecureModel handlers, stage one: claim the training's ε from its budget before anything reads the data.

One kopf daemon per model in its budget stage (:func:`budget_stage`) is the only writer of
the stage's status. It sizes the data, calibrates σ, claims ε (a ledger transaction,
idempotent per model uid and training version), and publishes the claim's state
(:mod:`securemodel.operator.claim_status`). While the claim waits, the daemon sleeps until
something it depends on changes:

* its budget: :func:`securemodel.operator.privacy_budget.wake_consumers` wakes it on every
  watch event of the budget, after kopf has put the new ledger into the
  ``budget_ledgers`` index, so a grant (which a release, a commit or a raised ε writes
  into the ledger at once) reaches the model in one watch event, with no API call and no
  polling;
* the model itself (:func:`wake_model`): a spec change, kopf's finalizer arriving;
* at worst every :data:`RESYNC_SECONDS`, as a level-based safety net.

A change of the model's training version (:class:`.children.Versions`) sends it back to
this stage: the daemon first settles the claims of versions the spec left (released if
no train Job of theirs exists, else committed whole), then claims for the new version,
while the version that serves keeps serving and Ready stays True.

The stage ends once the claim is granted (BudgetReserved True: the training stage takes
over) or can never be. A model that may hold a live claim carries kopf's finalizer, and
deleting it releases the claim (:func:`release_claim`); the daemon claims only once that
finalizer is in place, so no claim outlives its model.
"""

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

from securemodel.api import GROUP, VERSION
from securemodel.api.secure_model import KIND
from securemodel.operator.calibration import plan
from securemodel.operator.children import COMPONENT_LABEL, UID_LABEL, VERSION_LABEL, Versions
from securemodel.operator.claim_status import (
    budget_missing,
    calibration_failed,
    claim_pending,
    claimed,
    in_budget_stage,
    may_hold_claim,
    stale_claims,
    while_serving,
)
from securemodel.operator.ledger import BudgetNotFound, BudgetRef, committing, releasing, submitting
from securemodel.operator.model_status import write_status
from securemodel.operator.privacy_budget import budget_key
from securemodel.operator.runtime import Runtime, runtime
from securemodel.operator.settings import (
    DAEMON_CANCELLATION_BACKOFF,
    DAEMON_CANCELLATION_TIMEOUT,
    FINALIZER,
    RESYNC_SECONDS,
    RETRY_BACKOFF,
)
from securemodel.operator.status import Outcome, ready_status
from securemodel.operator.wakeups import sleep_until
from securemodel.privacy import ClaimState, Consumer, Ledger, LedgerError


def model_key(uid: str) -> tuple[str, str]:
    """The wake-up key of a model's own changes."""
    return (KIND.kind, uid)


@kopf.on.event(GROUP, VERSION, KIND.plural)
async def wake_model(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Wake the model's budget stage; kopf has already updated the body it reads.

    Async, so that it runs on the event loop the daemons wait on (asyncio events are not thread-safe).
    """
    runtime(memo).wakeups.notify(model_key(uid))


# Stopped when the model is deleted or the operator exits; cancelled if it does not return within
# the backoff (a claim cut short is either in the ledger, and release_claim releases it, or unsent).
@kopf.daemon(
    GROUP,
    VERSION,
    KIND.plural,
    when=lambda spec, status, **_: in_budget_stage(status, Versions.of(spec).version),
    backoff=RETRY_BACKOFF,
    cancellation_backoff=DAEMON_CANCELLATION_BACKOFF,
    cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT,
)
async def budget_stage(
    body: kopf.Body,
    uid: str,
    namespace: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    budget_ledgers: kopf.Index[BudgetRef, Ledger],
    **_: Any,
) -> None:
    """Claim ε for the spec's training version and publish the claim's state until it is granted or over."""
    current = runtime(memo)
    ref = BudgetRef(namespace, body["spec"]["privacy"]["budgetRef"])  # immutable (a CEL rule)
    written: dict[str, Any] = {}
    while not stopped:
        with current.wakeups.listen(model_key(uid), budget_key(ref)) as changed:
            outcome, done = await _advance(current, body, ref, budget_ledgers, stopped)
            if outcome is not None:
                written = await write_status(current, body, outcome, written)
            if done:
                # Stay until the status just written stops the daemon: kopf re-spawns a daemon its
                # filter stopped (for a later version of the spec), never one that returned.
                await stopped.wait()
                return
            await sleep_until(changed, stopped, RESYNC_SECONDS)


async def _advance(
    current: Runtime,
    body: kopf.Body,
    ref: BudgetRef,
    ledgers: kopf.Index[BudgetRef, Ledger],
    stopped: kopf.DaemonStopped,
) -> tuple[Outcome | None, bool]:
    """One pass of the stage: the outcome to publish (if any), and whether the stage is over."""
    spec, metadata, status = body["spec"], body["metadata"], body.get("status") or {}
    versions = Versions.of(spec)
    consumer = Consumer(KIND.kind, metadata["namespace"], metadata["name"], metadata["uid"], versions.training)
    ledger = next(iter(ledgers.get(ref, ())), None)
    if ledger is not None:
        await _settle_stale(current, ref, ledger, consumer)
    claim = ledger.claim(consumer.key) if ledger is not None else None
    # A claim is fixed when first made; σ is calibrated for the ε and δ it holds.
    privacy = spec["privacy"]
    epsilon, delta = (claim.epsilon, claim.delta) if claim else (privacy["epsilon"], privacy["delta"])
    try:
        target = plan(spec, epsilon, delta)
        calibration = await current.calibrator.calibrate(target)
    except ValueError as error:  # the data cannot be sized, or the target ε cannot be met
        return _for_version(calibration_failed(ref.name, str(error)), versions, status), False
    if claim is None:
        if stopped or metadata.get("deletionTimestamp"):
            return None, False
        if FINALIZER not in metadata.get("finalizers", ()):
            # Claim only what deleting the model will release: kopf adds the finalizer to a model that
            # may hold a claim. One whose last claim was refused may not: it first says it claims again.
            if may_hold_claim(status):
                return None, False
            return _for_version(claim_pending(ref.name, versions.training), versions, status), False
        try:
            ledger = await current.writer.apply(ref, submitting(consumer, epsilon, delta))
        except BudgetNotFound:
            return _for_version(budget_missing(ref.name), versions, status), False
        claim = ledger.claim(consumer.key)
        assert claim is not None, "a submitted claim is in the ledger it was written to"
    outcome = claimed(ref.name, claim, target, calibration.noise_multiplier)
    return _for_version(outcome, versions, status), claim.state is not ClaimState.WAITING


def _for_version(outcome: Outcome, versions: Versions, status: Mapping[str, Any]) -> Outcome:
    """``outcome`` as the status of ``versions``, with Ready kept True while an earlier version serves."""
    outcome = Outcome(outcome.phase, outcome.ready, outcome.conditions, {**outcome.fields, "version": versions.version},
                      outcome.warning)  # fmt: skip
    return while_serving(outcome, status.get("servingVersion"), ready_status(status))


async def _settle_stale(current: Runtime, ref: BudgetRef, ledger: Ledger, consumer: Consumer) -> None:
    """Release (or, if a train Job of theirs exists, commit whole) the model's claims for versions it left."""
    for claim in stale_claims(ledger, consumer.uid, consumer.version):
        selector = f"{UID_LABEL}={consumer.uid},{COMPONENT_LABEL}=train,{VERSION_LABEL}={claim.consumer.version}"
        batch = kubernetes.client.BatchV1Api(current.client)
        jobs = await asyncio.to_thread(batch.list_namespaced_job, consumer.namespace, label_selector=selector)
        key = claim.consumer.key
        change = committing(key, claim.epsilon) if jobs.items else releasing(key, pod_started=False)
        with contextlib.suppress(LedgerError):  # settled meanwhile: the change applies to the ledger as stored
            await current.writer.apply(ref, change)


@kopf.on.delete(GROUP, VERSION, KIND.plural, when=lambda status, **_: may_hold_claim(status), backoff=RETRY_BACKOFF)
async def release_claim(
    body: kopf.Body, spec: kopf.Spec, namespace: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any
) -> None:
    """Settle the model's claim before the model goes.

    A claim whose train pod never started is released; one whose pod started (and so may
    have touched the data) is committed: with the ε of the steps it ran if it finished,
    else with the whole claim (see :func:`securemodel.operator.pipeline.settle_on_delete`).
    """
    from securemodel.operator.pipeline import settle_on_delete  # the pipeline imports this module

    ref = BudgetRef(namespace, spec["privacy"]["budgetRef"])
    try:
        await settle_on_delete(runtime(memo), body, ref)
    except BudgetNotFound:
        pass  # the budget and its ledger are gone: nothing is held
    except LedgerError as error:
        logger.info(f"nothing to settle: {error}")
