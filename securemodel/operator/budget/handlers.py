"""PrivacyBudget handlers: keep the ledger, wake its consumers, and guard its spend.

* The ledger and everything derived from it (totals, phase, conditions) is written only
  by ledger transactions (:mod:`securemodel.operator.budget.ledger`). On create, resume and
  every spec change the budget runs the ``reconcile`` rule: a raised ``spec.epsilon``
  grants waiting claims at once. Every other way budget frees up (a release, a commit
  below the reservation) is itself a transaction that grants in the same write, so no
  timer is needed.
* :func:`budget_ledgers` indexes every budget's ledger in memory, and each change of a
  budget wakes the models waiting on it (see :mod:`securemodel.operator.secure_model`).
* The budget directory (:mod:`.directory`) keeps what each budget protects and who may spend
  it: consumers are refused by it, and a budget that shares data with another grants nothing.
* Deleting a budget whose ledger holds Reserved or Committed entries is blocked by kopf's
  finalizer unless the budget carries ``securemodel.io/allow-delete-with-spend: "true"``: its
  ledger is the only record of the privacy that dataset has released.
"""

import contextlib
from collections.abc import Mapping
from typing import Any

import kopf
import kubernetes

from securemodel.api import GROUP, VERSION
from securemodel.api.privacy_budget import ALLOW_DELETE_WITH_SPEND, KIND
from securemodel.operator.budget.ledger import BudgetNotFound, BudgetRef, LedgerContention
from securemodel.operator.runtime import Runtime, runtime
from securemodel.operator.settings import DELETION_RECHECK_SECONDS, RETRY_BACKOFF
from securemodel.privacy import BudgetSpec, Ledger, LedgerTampered, reconcile, totals


def budget_key(ref: BudgetRef) -> tuple[str, BudgetRef]:
    """The wake-up key of a budget's changes."""
    return (KIND.kind, ref)


def namespace_budgets_key(namespace: str) -> tuple[str, str]:
    """The wake-up key of a change of any budget of ``namespace`` (public models watch what all of them protect)."""
    return (f"{KIND.kind}-namespace", namespace)


@kopf.index(GROUP, VERSION, KIND.plural)
async def budget_ledgers(namespace: str, name: str, status: kopf.Status, **_: Any) -> dict[BudgetRef, Ledger]:
    """Every budget's ledger by reference, as last seen by the watch."""
    return {BudgetRef(namespace, name): Ledger.from_status(status)}


@kopf.on.event(GROUP, VERSION, KIND.plural)
async def wake_consumers(event: kopf.RawEvent, namespace: str, name: str, spec: kopf.Spec, memo: kopf.Memo,
                         **_: Any) -> None:  # fmt: skip
    """Record what the budget protects, wake the models waiting on it (the index already holds what
    changed), and reassess the budgets whose overlap with it this event changed.

    Async, so that it runs on the event loop the models wait on (asyncio events are not thread-safe).
    """
    current = runtime(memo)
    ref = BudgetRef(namespace, name)
    changed = current.budgets.drop(ref) if event.get("type") == "DELETED" else current.budgets.put(ref, spec)
    current.wakeups.notify(budget_key(ref))
    current.wakeups.notify(namespace_budgets_key(namespace))
    for other in changed:
        current.wakeups.notify(budget_key(other))
        await _reassess(current, other)


async def _reassess(current: Runtime, ref: BudgetRef) -> None:
    """Rewrite a budget's status after its overlaps changed; a failure is retried by its next change."""
    with contextlib.suppress(BudgetNotFound, LedgerTampered, LedgerContention, kubernetes.client.ApiException):
        await current.writer.apply(ref, reconcile)


@kopf.on.resume(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
@kopf.on.create(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
@kopf.on.update(GROUP, VERSION, KIND.plural, backoff=RETRY_BACKOFF)
async def reconcile_ledger(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Apply the spec to the ledger: write the status, grant what a raised ε lets through."""
    try:
        await runtime(memo).writer.apply(BudgetRef(namespace, name), reconcile)
    except BudgetNotFound:
        pass  # deleted meanwhile: nothing left to reconcile
    except LedgerTampered as error:  # its conditions say so; checked again until a person restores the ledger
        raise kopf.TemporaryError(f"the ledger does not verify: {error}", delay=DELETION_RECHECK_SECONDS) from error


def deletion_guarded(annotations: Mapping[str, str], **_: Any) -> bool:
    """Whether deleting the budget waits for :func:`guard_spend` (no override annotation)."""
    return annotations.get(ALLOW_DELETE_WITH_SPEND) != "true"


@kopf.on.delete(GROUP, VERSION, KIND.plural, when=deletion_guarded, backoff=RETRY_BACKOFF)
async def guard_spend(body: kopf.Body, spec: kopf.Spec, status: kopf.Status, retry: int, **_: Any) -> None:
    """Let the budget go only if its ledger holds no spend (:attr:`~securemodel.privacy.Ledger.holds_spend`); say why
    not on the first attempt."""
    ledger = Ledger.from_status(status)
    if not ledger.holds_spend:
        return
    sums = totals(ledger, BudgetSpec.from_dict(spec))
    message = (
        f"not deleting: its ledger holds ε {sums.committed:g} committed and {sums.reserved:g} reserved, and it is the "
        f'only record of that spend; to delete it anyway, a data steward annotates it {ALLOW_DELETE_WITH_SPEND}="true"'
    )
    if retry == 0:
        kopf.event(body, type="Warning", reason="DeletionBlocked", message=message)
    raise kopf.TemporaryError(message, delay=DELETION_RECHECK_SECONDS)
