"""The budget's audit trail: one JSON line on stdout per ledger decision a transaction wrote."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from typing import Any

from securemodel.operator.budget.ledger import Change, Transaction, committing, releasing, submitting
from securemodel.operator.budget.writer import AUDIT_LOGGER, JsonLines, LedgerWriter, audit_logger, audit_records
from securemodel.operator.conditions import Event
from securemodel.privacy import BudgetSpec, Consumer, DpSgd, Ledger, status_fields
from securemodel.privacy.ledger import Outcome

SPEC = BudgetSpec(epsilon=3.0, delta=1e-5)
A = Consumer("SecureModel", "clinic", "a", "uid-a", "v1")
B = Consumer("SecureModel", "clinic", "b", "uid-b", "v1")
C = Consumer("FederatedRound", "research", "c", "uid-c")
SECRET_LOOKING = "tls.key"


def transaction(changes: list[Change], *, written: bool = True) -> Transaction:
    """What :func:`securemodel.operator.budget.ledger.transact` returns for ``changes`` on an empty ledger."""
    ledger, results = Ledger(()), []
    for change in changes:
        try:
            outcome = change(ledger, SPEC, "2026-11-26T10:00:00Z")
        except ValueError as error:
            results.append(error)
            continue
        ledger = outcome.ledger
        results.append(outcome)
    budget = {"metadata": {"namespace": "clinic", "name": "b1", "uid": "uid-b1", "resourceVersion": "7"},
              "spec": {"epsilon": 3.0, "delta": 1e-5}, "status": status_fields(ledger, SPEC)}  # fmt: skip
    decided = [d for r in results if isinstance(r, Outcome) for d in r.decisions]
    events = tuple(Event(d.event_type, d.event_reason, d.message) for d in decided) if written else ()
    return Transaction(budget, ledger, tuple(results), events, 1)


CHANGES: list[Change] = [
    submitting(A, 2.0, 1e-5, DpSgd(1.1, 0.01, 1000)),
    submitting(B, 2.0, 1e-5),
    submitting(C, 5.0, 1e-5),
    committing(A.key, 1.5),
    releasing(B.key),
    releasing(A.key),  # refused by the rules (committed): no decision, no line
]


def json_handlers() -> list[logging.Handler]:
    return [h for h in audit_logger().handlers if isinstance(h.formatter, JsonLines)]


def lines_of(transaction: Transaction) -> list[dict[str, Any]]:
    """Run the writer's settlement of a batch and parse what its audit logger wrote."""
    loop = asyncio.new_event_loop()
    try:
        batch = [(change, loop.create_future()) for change in CHANGES]
        posted: list[tuple[Event, ...]] = []
        writer = LedgerWriter(None, lambda _, events: posted.append(events), None)  # type: ignore[arg-type]
        (handler,) = json_handlers()
        stream = io.StringIO()
        previous = handler.setStream(stream)  # type: ignore[attr-defined]
        try:
            writer._settle(batch, transaction)
        finally:
            handler.setStream(previous)  # type: ignore[attr-defined]
        assert posted == [transaction.events]
        assert [type(f.exception()).__name__ for f in (future for _, future in batch)] == ["NoneType"] * 5 + ["LedgerError"]
    finally:
        loop.close()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_decision_of_a_written_transaction_is_one_parsable_line() -> None:
    written = transaction(CHANGES)
    lines = lines_of(written)
    assert [(line["decision"], line["consumer"]["name"]) for line in lines] == [
        ("Granted", "a"), ("Queued", "b"), ("Rejected", "c"), ("Committed", "a"), ("Released", "b"),
    ]  # fmt: skip
    granted, queued, rejected, committed, released = lines
    assert granted["consumer"] == {"kind": "SecureModel", "namespace": "clinic", "name": "a", "uid": "uid-a", "version": "v1"}
    assert (granted["epsilon"], granted["delta"]) == (2.0, 1e-5)
    assert rejected["consumer"]["kind"] == "FederatedRound" and rejected["epsilon"] == 5.0
    assert committed["epsilon"] == 1.5 and committed["mechanism"]["type"] == "DPSGD"  # the whole claim stays charged
    assert granted["budget"] == {"namespace": "clinic", "name": "b1", "uid": "uid-b1", "epsilon": 3.0, "delta": 1e-5}
    # The composed totals after the whole transaction, as the budget's status holds them.
    status = written.budget["status"]
    for line in lines:
        assert line["audit"] == "PrivacyBudgetDecision" and line["time"].endswith("Z")
        assert line["totals"] == {key: status[key] for key in
                                  ("epsilonCommitted", "epsilonReserved", "epsilonAvailable", "epsilonSummed", "deltaSummed")}
        assert line["message"]
    assert status["epsilonCommitted"] > 0 and status["epsilonReserved"] == 0 and status["epsilonSummed"] == 1.5


def test_a_transaction_that_wrote_nothing_leaves_no_line() -> None:
    assert audit_records(transaction(CHANGES, written=False)) == []


def test_the_audit_logger_writes_only_json_to_stdout_and_nothing_else_reaches_it() -> None:
    logger = audit_logger()
    assert logger.name == AUDIT_LOGGER and not logger.propagate and len(json_handlers()) == 1
    assert audit_logger() is logger and len(json_handlers()) == 1
    text = json.dumps(lines_of(transaction(CHANGES)))
    assert SECRET_LOOKING not in text and "ledgerHead" not in text
