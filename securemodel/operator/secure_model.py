"""SecureModel handlers, stage one: claim the training's ε from its budget before anything reads the data.

One kopf daemon per model in its budget stage (:func:`budget_stage`) is the only writer of
the stage's status. It sizes the data, calibrates σ, claims ε (a ledger transaction,
idempotent per model uid), and publishes the claim's state
(:mod:`securemodel.operator.claim_status`). While the claim waits, the daemon sleeps until
something it depends on changes:

* its budget: :func:`securemodel.operator.privacy_budget.wake_consumers` wakes it on every
  watch event of the budget, after kopf has put the new ledger into the
  ``budget_ledgers`` index, so a grant (which a release, a commit or a raised ε writes
  into the ledger at once) reaches the model in one watch event, with no API call and no
  polling;
* the model itself (:func:`wake_model`): a spec change, kopf's finalizer arriving;
* at worst every :data:`RESYNC_SECONDS`, as a level-based safety net.

The daemon stops once the claim is granted (BudgetReserved True: the training stage takes
over) or can never be. A model that may hold a live claim carries kopf's finalizer, and
deleting it releases the claim (:func:`release_claim`); the daemon claims only once that
finalizer is in place, so no claim outlives its model.
"""

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from securemodel.api import GROUP, VERSION
from securemodel.api.secure_model import KIND
from securemodel.operator.calibration import plan
from securemodel.operator.claim_status import (
    budget_missing,
    calibration_failed,
    claimed,
    in_budget_stage,
    may_hold_claim,
)
from securemodel.operator.ledger import MERGE_PATCH, BudgetNotFound, BudgetRef, submitting
from securemodel.operator.privacy_budget import budget_key
from securemodel.operator.runtime import Runtime, runtime
from securemodel.operator.settings import (
    DAEMON_CANCELLATION_BACKOFF,
    DAEMON_CANCELLATION_TIMEOUT,
    FINALIZER,
    RESYNC_SECONDS,
    RETRY_BACKOFF,
)
from securemodel.operator.status import Outcome, event_for, status_for
from securemodel.privacy import Claim, ClaimState, Consumer, Ledger, LedgerError


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
    when=lambda status, **_: in_budget_stage(status),
    backoff=RETRY_BACKOFF,
    cancellation_backoff=DAEMON_CANCELLATION_BACKOFF,
    cancellation_timeout=DAEMON_CANCELLATION_TIMEOUT,
)
async def budget_stage(
    body: kopf.Body,
    uid: str,
    namespace: str,
    name: str,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    budget_ledgers: kopf.Index[BudgetRef, Ledger],
    **_: Any,
) -> None:
    """Claim the model's ε and publish the claim's state until it is granted or over."""
    current = runtime(memo)
    ref = BudgetRef(namespace, body["spec"]["privacy"]["budgetRef"])
    consumer = Consumer(KIND.kind, namespace, name, uid)
    written: dict[str, Any] = {}
    while not stopped:
        with current.wakeups.listen(model_key(uid), budget_key(ref)) as changed:
            outcome, done = await _advance(current, body, ref, consumer, budget_ledgers, stopped)
            if outcome is not None:
                written = await _publish(current, body, outcome, written)
            if done:
                return
            await _sleep(changed, stopped, RESYNC_SECONDS)


async def _sleep(changed: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    """Until a wake-up, the daemon is stopped, or ``timeout`` passes."""
    waits = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stopped.wait(timeout))}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def _advance(
    current: Runtime,
    body: kopf.Body,
    ref: BudgetRef,
    consumer: Consumer,
    ledgers: kopf.Index[BudgetRef, Ledger],
    stopped: kopf.DaemonStopped,
) -> tuple[Outcome | None, bool]:
    """One pass of the stage: the outcome to publish (if any), and whether the stage is over."""
    privacy = body["spec"]["privacy"]
    claim = _indexed_claim(ledgers, ref, consumer.uid)
    # A claim is fixed when first made; σ is calibrated for the ε and δ it holds.
    epsilon, delta = (claim.epsilon, claim.delta) if claim else (privacy["epsilon"], privacy["delta"])
    try:
        target = plan(body["spec"], epsilon, delta)
        calibration = await current.calibrator.calibrate(target)
    except ValueError as error:  # the data cannot be sized, or the target ε cannot be met
        return calibration_failed(ref.name, str(error)), False
    if claim is None:
        metadata = body["metadata"]
        if stopped or FINALIZER not in metadata.get("finalizers", ()) or metadata.get("deletionTimestamp"):
            return None, False  # claim only what deleting the model will release
        try:
            ledger = await current.writer.apply(ref, submitting(consumer, epsilon, delta))
        except BudgetNotFound:
            return budget_missing(ref.name), False
        claim = ledger.claim(consumer.uid)
        assert claim is not None, "a submitted claim is in the ledger it was written to"
    return claimed(ref.name, claim, target, calibration.noise_multiplier), claim.state is not ClaimState.WAITING


def _indexed_claim(ledgers: kopf.Index[BudgetRef, Ledger], ref: BudgetRef, uid: str) -> Claim | None:
    """The claim of ``uid`` as the watch last saw the budget; None if the budget or the claim is not there."""
    ledger = next(iter(ledgers.get(ref, ())), None)
    return ledger.claim(uid) if ledger is not None else None


async def _publish(
    current: Runtime, body: kopf.Body, outcome: Outcome, written: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``outcome`` into the model's status unless it is already there; return what was written.

    ``written`` is what this daemon last wrote: the watched body may not show it yet.
    """
    known = {**(body.get("status") or {}), **written}
    status = status_for(outcome, known, body["metadata"].get("generation", 0), datetime.now(UTC))
    if _contains(known, status):
        return dict(written)
    metadata = body["metadata"]
    await asyncio.to_thread(
        current.custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        metadata["namespace"],
        KIND.plural,
        metadata["name"],
        {"status": status},
        _content_type=MERGE_PATCH,
    )
    event = event_for(outcome, known)
    if event is not None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    return {**written, **status}


def _contains(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether merging ``patch`` into ``current`` would change nothing."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(current.get(key), Mapping):
            if not _contains(current[key], value):
                return False
        elif current.get(key) != value:
            return False
    return True


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
