"""The ledger of a PrivacyBudget, changed in the API server exactly, whatever runs concurrently.

The ledger lives in the budget's ``status``. Every change is a read-modify-write
(:func:`transact`): read the budget, apply pure ledger rules
(:mod:`securemodel.privacy.ledger`) to its spec and status, and write the whole
resulting status back through the status subresource with the
``metadata.resourceVersion`` that was read as a precondition. If anything wrote the
budget in between (another claim, a spec change, another operator process), the API
server answers 409 Conflict and the transaction starts over from a fresh read, so two
writers never both act on the same ledger state: the API server serialises the writes
and ``committed + reserved <= epsilon`` holds after each of them. Claims are keyed by
consumer (uid, and version), so repeating a transaction (an operator restarted mid-claim, a retry
after a lost response) never counts a claim twice.

Inside the operator, transactions are batched per budget by
:class:`securemodel.operator.budget.writer.LedgerWriter`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kubernetes

from securemodel.api import GROUP, VERSION
from securemodel.api.privacy_budget import KIND
from securemodel.operator import kube
from securemodel.operator.budget.assess import assess
from securemodel.operator.settings import LEDGER_MAX_ATTEMPTS
from securemodel.operator.conditions import Event, event_for, status_for, timestamp
from securemodel.privacy import BudgetSpec, Consumer, Ledger, Outcome, commit, dispatch, mark_started, release, submit


# A change of the ledger: the pure rules applied to (ledger, spec, now as RFC 3339).
Change = Callable[[Ledger, BudgetSpec, str], Outcome]


@dataclass(frozen=True)
class BudgetRef:
    """A PrivacyBudget by namespace and name."""

    namespace: str
    name: str

    def __str__(self) -> str:
        return f"PrivacyBudget {self.namespace}/{self.name}"


class BudgetNotFound(LookupError):
    """The budget does not exist (or no longer does)."""


class LedgerContention(RuntimeError):
    """Every attempt of a transaction met a concurrent write; nothing was written."""


@dataclass(frozen=True)
class Transaction:
    """What one transaction wrote: the budget as stored, its ledger, and one result per change.

    A result is the change's :class:`Outcome`, or the :class:`LedgerError` (or other
    ``ValueError``) the rules raised for it, in which case that change was left out and
    the others were applied. ``events`` are the Events to post on the budget: one per
    decision, and one when its phase or Ready condition changed. ``attempts`` counts the
    reads (1 + the conflicts met).
    """

    budget: Mapping[str, Any]
    ledger: Ledger
    results: tuple[Outcome | ValueError, ...]
    events: tuple[Event, ...]
    attempts: int


def submitting(consumer: Consumer, epsilon: float, delta: float) -> Change:
    """The change that adds ``consumer``'s claim (idempotent per consumer key) and grants what fits."""
    return lambda ledger, spec, now: submit(ledger, spec, consumer, epsilon, delta, now)


def committing(key: str, epsilon_spent: float) -> Change:
    """The change that commits the Reserved claim with ``key`` at ``epsilon_spent`` (idempotent)."""
    return lambda ledger, spec, now: commit(ledger, spec, key, now, epsilon_spent)


def releasing(key: str) -> Change:
    """The change that gives back the claim with ``key``, refused once a container of it ran."""
    return lambda ledger, spec, now: release(ledger, spec, key, now)


def dispatching(key: str) -> Change:
    """The change that marks the Reserved claim with ``key`` dispatched (before its Job is created)."""
    return lambda ledger, spec, now: dispatch(ledger, key, now)


def starting(key: str) -> Change:
    """The change that marks the claim with ``key`` started: a container of its Job ran."""
    return lambda ledger, spec, now: mark_started(ledger, key, now)


def transact(api: kubernetes.client.CustomObjectsApi, ref: BudgetRef, changes: Sequence[Change]) -> Transaction:
    """Apply ``changes`` in order to the budget's ledger in one optimistic-concurrency write.

    Writes nothing if the resulting status equals the stored one. Guarantee: the status
    written is the pure rules applied to the ledger and spec of the exact resourceVersion
    it replaces.

    Raises:
        BudgetNotFound: if the budget does not exist.
        LedgerContention: after :data:`LEDGER_MAX_ATTEMPTS` conflicts in a row.
        kubernetes.client.ApiException: for any other error of the API server.
    """
    for attempt in range(1, LEDGER_MAX_ATTEMPTS + 1):
        budget = read_budget(api, ref)
        spec = BudgetSpec.from_dict(budget["spec"])
        ledger = Ledger.from_status(budget.get("status"))
        now = datetime.now(UTC)
        results: list[Outcome | ValueError] = []
        for change in changes:
            try:
                outcome = change(ledger, spec, timestamp(now))
            except ValueError as error:  # LedgerError, or an argument the rules refuse
                results.append(error)
                continue
            ledger = outcome.ledger
            results.append(outcome)
        current = budget.get("status") or {}
        assessed = assess(spec, ledger)
        status = status_for(assessed, current, budget["metadata"].get("generation", 0), now)
        if all(current.get(key) == value for key, value in status.items()):
            return Transaction(budget, ledger, tuple(results), (), attempt)
        decided = [decision for r in results if isinstance(r, Outcome) for decision in r.decisions]
        events = [Event(d.event_type, d.event_reason, d.message) for d in decided]
        changed = event_for(assessed, current)
        if changed is not None:
            events.append(changed)
        try:
            written = api.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                ref.namespace,
                KIND.plural,
                ref.name,
                {"metadata": {"resourceVersion": budget["metadata"]["resourceVersion"]}, "status": status},
                _content_type=kube.MERGE_PATCH,
            )
        except kubernetes.client.ApiException as error:
            if error.status == 409:
                continue
            if error.status == 404:
                raise BudgetNotFound(f"{ref} does not exist") from None
            raise
        return Transaction(written, ledger, tuple(results), tuple(events), attempt)
    raise LedgerContention(f"{ref}: gave up after {LEDGER_MAX_ATTEMPTS} conflicting writes in a row")


def read_budget(api: kubernetes.client.CustomObjectsApi, ref: BudgetRef) -> dict[str, Any]:
    """The budget as stored now.

    Raises:
        BudgetNotFound: if it does not exist.
    """
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, ref.namespace, KIND.plural, ref.name)
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            raise BudgetNotFound(f"{ref} does not exist") from None
        raise
