"""Group commit of ledger changes: one transaction at a time per budget, batching what queues up.

Besides the Events, every budget decision a transaction wrote (a claim Queued, Granted, Rejected,
Committed or Released) is one JSON line on the operator's stdout, through the logger
:data:`AUDIT_LOGGER` (:func:`audit_records`): an audit trail that outlives Events, which the API
server drops after an hour. The lines hold what the ledger holds (consumers, ε, δ, mechanisms,
composed totals), never a secret. Kopf's own logs go to stderr.
"""

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import kubernetes

from securemodel.operator.budget.directory import BudgetDirectory
from securemodel.operator.budget.ledger import BudgetRef, Change, Transaction, transact
from securemodel.operator.conditions import Event
from securemodel.privacy import Ledger
from securemodel.privacy.ledger import Outcome

# Posts the Events of a transaction about the budget it wrote.
EventPoster = Callable[[Mapping[str, Any], tuple[Event, ...]], None]
AUDIT_LOGGER: Final = "securemodel.audit"
# The budget's composed figures after the transaction, as its status holds them.
_TOTALS: Final = ("epsilonCommitted", "epsilonReserved", "epsilonAvailable", "epsilonSummed", "deltaSummed")


class JsonLines(logging.Formatter):
    """One JSON object per line: the record's message (a mapping) with the record's time first."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        message = record.msg if isinstance(record.msg, Mapping) else {"message": record.getMessage()}
        return json.dumps({"time": stamp, **message}, separators=(",", ":"))


def audit_logger() -> logging.Logger:
    """The :data:`AUDIT_LOGGER` logger, writing JSON lines to stdout (set up once; not propagated)."""
    logger = logging.getLogger(AUDIT_LOGGER)
    if not any(isinstance(handler.formatter, JsonLines) for handler in logger.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonLines())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def audit_records(transaction: Transaction) -> list[dict[str, Any]]:
    """One audit record per decision of a transaction that was written (none for one that changed nothing)."""
    if not transaction.events:  # nothing was written: its decisions did not happen
        return []
    budget = transaction.budget
    meta, spec, status = budget.get("metadata") or {}, budget.get("spec") or {}, budget.get("status") or {}
    about = {"namespace": meta.get("namespace"), "name": meta.get("name"), "uid": meta.get("uid"),
             "epsilon": spec.get("epsilon"), "delta": spec.get("delta")}  # fmt: skip
    totals = {key: status.get(key) for key in _TOTALS}
    records = []
    for result in transaction.results:
        if not isinstance(result, Outcome):
            continue
        for decision in result.decisions:
            claim = transaction.ledger.claim(decision.consumer.key)
            records.append({
                "audit": "PrivacyBudgetDecision",
                "decision": decision.kind.value,
                "consumer": decision.consumer.to_dict(),
                "epsilon": decision.epsilon,
                "delta": claim.delta if claim is not None else None,
                "mechanism": claim.mechanism.to_dict() if claim is not None else None,
                "budget": about,
                "totals": totals,
                "message": decision.message,
            })  # fmt: skip
    return records


class LedgerWriter:
    """Applies this process's ledger changes, one :func:`transact` at a time per budget.

    Changes that arrive while a transaction of the same budget is in flight wait and go
    into the next one together, in arrival order, so N concurrent claims on one budget
    cost a few writes instead of N writes and up to N(N-1)/2 conflicts. Batching is only
    an optimisation: each transaction is still an optimistic-concurrency write, exact
    against every other writer (another operator process, a spec change, a commit from
    the training stage).
    """

    def __init__(self, api: kubernetes.client.CustomObjectsApi, post: EventPoster, directory: BudgetDirectory) -> None:
        self._api = api
        self._post = post
        self._directory = directory
        self._queues: dict[BudgetRef, list[tuple[Change, asyncio.Future[Ledger]]]] = {}
        self._drains: dict[BudgetRef, asyncio.Task[None]] = {}
        # The last ledger read or written per budget uid: a stored one must be a permitted successor.
        self._seen: dict[str, Ledger] = {}

    async def apply(self, ref: BudgetRef, change: Change) -> Ledger:
        """Apply ``change`` to the ledger of ``ref``; return the ledger as written (with its batch's later changes).

        Raises what :func:`transact` raises, or the ``ValueError`` the rules raised for this change.
        """
        future: asyncio.Future[Ledger] = asyncio.get_running_loop().create_future()
        self._queues.setdefault(ref, []).append((change, future))
        if ref not in self._drains:
            self._drains[ref] = asyncio.create_task(self._drain(ref), name=f"ledger writer of {ref}")
        return await future

    async def _drain(self, ref: BudgetRef) -> None:
        queue = self._queues[ref]
        try:
            while queue:
                batch = queue[:]
                del queue[:]
                try:
                    transaction = await asyncio.to_thread(transact, self._api, ref, [change for change, _ in batch], self._seen,
                                                          self._directory.overlapping(ref))  # fmt: skip
                except Exception as error:  # every change of the batch failed with it: hand it to each caller
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                self._settle(batch, transaction)
        finally:
            del self._queues[ref]
            del self._drains[ref]

    def _settle(self, batch: list[tuple[Change, asyncio.Future[Ledger]]], transaction: Transaction) -> None:
        for (_, future), result in zip(batch, transaction.results, strict=True):
            if future.done():  # its caller was cancelled; the change was applied all the same
                continue
            if isinstance(result, ValueError):
                future.set_exception(result)
            else:
                future.set_result(transaction.ledger)
        self._post(transaction.budget, transaction.events)
        audit = audit_logger()
        for record in audit_records(transaction):
            audit.info(record)
