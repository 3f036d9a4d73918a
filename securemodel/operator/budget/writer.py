"""Group commit of ledger changes: one transaction at a time per budget, batching what queues up."""

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes

from securemodel.operator.budget.directory import BudgetDirectory
from securemodel.operator.budget.ledger import BudgetRef, Change, Transaction, transact
from securemodel.operator.conditions import Event
from securemodel.privacy import Ledger

# Posts the Events of a transaction about the budget it wrote.
EventPoster = Callable[[Mapping[str, Any], tuple[Event, ...]], None]


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
