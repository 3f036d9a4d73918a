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

import contextlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import kubernetes

from securemodel.api import GROUP, VERSION
from securemodel.api.privacy_budget import KIND
from securemodel.operator import kube
from securemodel.operator.budget.assess import assess, tampered
from securemodel.operator.settings import LEDGER_MAX_ATTEMPTS
from securemodel.operator.conditions import Event, event_for, merge_conditions, status_for, timestamp
from securemodel.privacy import (
    BudgetSpec,
    Consumer,
    Ledger,
    LedgerTampered,
    Mechanism,
    Outcome,
    Submission,
    check_transition,
    commit,
    compacted_if_large,
    dispatch,
    mark_started,
    release,
    submit_all,
    verify,
)


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


@dataclass(frozen=True)
class Submitting:
    """The change that adds ``consumer``'s claim of ``mechanism`` (guaranteeing (``epsilon``, ``delta``);
    idempotent per consumer key) and grants what fits. Consecutive ones in :func:`applied` are decided
    together (:func:`securemodel.privacy.submit_all`)."""

    consumer: Consumer
    epsilon: float
    delta: float
    mechanism: Mechanism | None = None

    def submission(self) -> Submission:
        """The claim to submit; ValueError if the rules refuse its epsilon or delta."""
        return Submission(self.consumer, self.epsilon, self.delta, self.mechanism)

    def __call__(self, ledger: Ledger, spec: BudgetSpec, now: str) -> Outcome:
        (outcome,) = submit_all(ledger, spec, (self.submission(),), now)
        return outcome


def submitting(consumer: Consumer, epsilon: float, delta: float, mechanism: Mechanism | None = None) -> Change:
    """The change that adds ``consumer``'s claim of ``mechanism`` (guaranteeing (``epsilon``, ``delta``);
    idempotent per consumer key) and grants what fits."""
    return Submitting(consumer, epsilon, delta, mechanism)


def committing(key: str, epsilon_spent: float, mechanism: Mechanism | None = None) -> Change:
    """The change that commits the Reserved claim with ``key`` at ``epsilon_spent`` and the ``mechanism`` that
    ran (None: the whole reservation stays charged); idempotent."""
    return lambda ledger, spec, now: commit(ledger, spec, key, now, epsilon_spent, mechanism=mechanism)


def releasing(key: str) -> Change:
    """The change that gives back the claim with ``key``, refused once a container of it ran."""
    return lambda ledger, spec, now: release(ledger, spec, key, now)


def dispatching(key: str) -> Change:
    """The change that marks the Reserved claim with ``key`` dispatched (before its Job is created)."""
    return lambda ledger, spec, now: dispatch(ledger, key, now)


def starting(key: str) -> Change:
    """The change that marks the claim with ``key`` started: a container of its Job ran."""
    return lambda ledger, spec, now: mark_started(ledger, key, now)


def read_ledger(status: Mapping[str, Any] | None, previous: Ledger | None) -> Ledger:
    """The ledger of a budget's ``status``, verified: its hash chain (:func:`securemodel.privacy.verify`; a
    ledger with entries must be sealed) and, against ``previous`` (the last ledger this process read or
    wrote), its history (:func:`securemodel.privacy.check_transition`: no entry removed, no final one changed).

    Raises:
        LedgerTampered: if either does not hold.
    """
    status = status or {}
    ledger = verify(status, require_seal=bool(status.get("claims") or status.get("compacted")))
    if previous is not None:
        check_transition(previous, ledger)
    return ledger


def applied(
    ledger: Ledger, spec: BudgetSpec, changes: Sequence[Change], now: str
) -> tuple[Ledger, tuple[Outcome | ValueError, ...]]:
    """``changes`` applied in order to ``ledger``: the ledger after them and one result per change.

    A result is the change's :class:`Outcome`, or the ``ValueError`` (e.g. :class:`LedgerError`) the
    rules raised for it, in which case that change was left out. Consecutive :class:`Submitting`
    changes are decided together by :func:`securemodel.privacy.submit_all`: the same ledger as one
    after another, at O(log k) compositions for k claims of one mechanism; each of their Outcomes
    holds the ledger after the group.
    """
    results: list[Outcome | ValueError] = []
    for submits, group in itertools.groupby(changes, key=lambda change: isinstance(change, Submitting)):
        if submits:
            ledger, decided = _submitted(ledger, spec, [change.submission for change in group], now)  # type: ignore[attr-defined]
            results += decided
            continue
        for change in group:
            try:
                outcome = change(ledger, spec, now)
            except ValueError as error:  # LedgerError, or an argument the rules refuse
                results.append(error)
                continue
            ledger = outcome.ledger
            results.append(outcome)
    return ledger, tuple(results)


def _submitted(
    ledger: Ledger, spec: BudgetSpec, claims: Sequence[Callable[[], Submission]], now: str
) -> tuple[Ledger, list[Outcome | ValueError]]:
    """The ``claims`` the rules accept submitted together; an Outcome, or the ValueError of a refused one, per claim."""
    submissions: list[Submission | ValueError] = []
    for claim in claims:
        try:
            submissions.append(claim())
        except ValueError as error:  # an argument the rules refuse
            submissions.append(error)
    outcomes = submit_all(ledger, spec, [s for s in submissions if isinstance(s, Submission)], now)
    decided = iter(outcomes)
    results = [s if isinstance(s, ValueError) else next(decided) for s in submissions]
    return (outcomes[-1].ledger if outcomes else ledger), results


def transact(
    api: kubernetes.client.CustomObjectsApi,
    ref: BudgetRef,
    changes: Sequence[Change],
    seen: dict[str, Ledger] | None = None,
    overlaps: tuple[str, ...] = (),
) -> Transaction:
    """Apply ``changes`` in order to the budget's verified ledger in one optimistic-concurrency write.

    Writes nothing if the resulting status equals the stored one. Guarantee: the status
    written is the pure rules applied to the ledger and spec of the exact resourceVersion
    it replaces, compacted once it grows large, and sealed (hash chain) again. ``seen`` holds
    the last ledger this process read or wrote per budget uid; it is checked against and updated.
    A ledger that does not verify (:func:`read_ledger`) is never written: the budget's
    conditions say so (``LedgerTampered``) and :class:`LedgerTampered` is raised. ``overlaps``
    names the other budgets of the namespace that cover some of this budget's data: while there
    are any, nothing is granted (:class:`securemodel.privacy.BudgetSpec`).

    Raises:
        BudgetNotFound: if the budget does not exist.
        LedgerTampered: if the stored ledger does not verify.
        LedgerContention: after :data:`LEDGER_MAX_ATTEMPTS` conflicts in a row.
        kubernetes.client.ApiException: for any other error of the API server.
    """
    for attempt in range(1, LEDGER_MAX_ATTEMPTS + 1):
        budget = read_budget(api, ref)
        spec = replace(BudgetSpec.from_dict(budget["spec"]), overlaps=overlaps)
        now = datetime.now(UTC)
        uid = budget["metadata"].get("uid", "")
        try:
            stored = read_ledger(budget.get("status"), (seen or {}).get(uid))
        except LedgerTampered as error:
            _report_tampering(api, ref, budget, error, now)
            raise
        if seen is not None:
            seen[uid] = stored
        ledger, results = applied(compacted_if_large(stored), spec, changes, timestamp(now))
        current = budget.get("status") or {}
        assessed = assess(spec, ledger)
        status = status_for(assessed, current, budget["metadata"].get("generation", 0), now)
        status["display"] = KIND.display(status)
        if all(current.get(key) == value for key, value in status.items()):
            return Transaction(budget, ledger, results, (), attempt)
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
                field_manager=kube.FIELD_MANAGER,
                _content_type=kube.MERGE_PATCH,
            )
        except kubernetes.client.ApiException as error:
            if error.status == 409:
                continue
            if error.status == 404:
                raise BudgetNotFound(f"{ref} does not exist") from None
            raise
        if seen is not None:
            seen[uid] = ledger
        return Transaction(written, ledger, results, tuple(events), attempt)
    raise LedgerContention(f"{ref}: gave up after {LEDGER_MAX_ATTEMPTS} conflicting writes in a row")


def _report_tampering(
    api: kubernetes.client.CustomObjectsApi, ref: BudgetRef, budget: Mapping[str, Any], error: LedgerTampered, now: datetime
) -> None:
    """Say in the budget's conditions that its ledger does not verify (the ledger itself is left as stored)."""
    current = budget.get("status") or {}
    outcome = tampered(error)
    generation = budget["metadata"].get("generation", 0)
    patch = {"conditions": merge_conditions(current.get("conditions") or [], (outcome.ready, *outcome.kstatus()),
                                            generation, now)}  # fmt: skip
    if all(current.get(key) == value for key, value in patch.items()):
        return
    with contextlib.suppress(kubernetes.client.ApiException):  # a conflict: the next transaction says it again
        api.patch_namespaced_custom_object_status(
            GROUP, VERSION, ref.namespace, KIND.plural, ref.name,
            {"metadata": {"resourceVersion": budget["metadata"]["resourceVersion"]}, "status": patch},
            field_manager=kube.FIELD_MANAGER, _content_type=kube.MERGE_PATCH,
        )  # fmt: skip


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
