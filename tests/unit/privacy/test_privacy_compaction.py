"""Compaction keeps composition, sums, keys and the chain exact, and the status small."""

from __future__ import annotations

import json

import pytest

from securemodel.privacy.chain import check_transition, verify
from securemodel.privacy.claims import BudgetSpec, Claim, ClaimState, Consumer, Ledger, totals
from securemodel.privacy.compaction import compact
from securemodel.privacy.ledger import commit, release, submit
from securemodel.privacy.mechanisms import DpSgd
from securemodel.privacy.status import status_fields

NOW = "2026-11-21T10:00:00Z"
KEY = b"k" * 32
SPEC = BudgetSpec(1000.0, 1e-5)
RUNS = (DpSgd(3.5304316605045396, 64 / 456, 143), DpSgd(8.0, 0.01, 1000))


def consumer(index: int) -> Consumer:
    return Consumer("SecureModel", f"team-{index % 7}", f"model-{index}", f"{index:08d}-uid-of-36-characters-xx", "v1")


def settled_ledger(count: int, live: tuple[int, ...] = ()) -> Ledger:
    """``count`` claims, committed (every fifth released), except ``live`` ones, left Reserved."""
    ledger = Ledger()
    for index in range(count):
        ledger = submit(ledger, SPEC, consumer(index), 1.0, 1e-6, NOW, mechanism=RUNS[index % 2]).ledger
    for index in range(count):
        key = consumer(index).key
        if index in live:
            continue
        if index % 5 == 4:
            ledger = release(ledger, SPEC, key, NOW).ledger
        else:
            ledger = commit(ledger, SPEC, key, NOW).ledger
    return ledger


def test_compaction_keeps_composition_sums_and_the_chain() -> None:
    ledger = settled_ledger(40, live=(30,))
    compacted = compact(ledger, keep=5, key=KEY)
    assert compacted.compacted is not None and compacted.compacted.entries == 30  # stops at the live entry
    assert len(compacted.claims) == 10 and compacted.claims[0].state is ClaimState.RESERVED
    assert totals(compacted, SPEC) == totals(ledger, SPEC)
    check_transition(ledger, compacted)
    status = json.loads(json.dumps(status_fields(compacted, SPEC, key=KEY)))
    assert verify(status, key=KEY) == compacted
    settled = commit(compacted, SPEC, consumer(30).key, NOW).ledger
    again = compact(settled, keep=5, key=KEY)  # only what was final before this write is folded
    assert again.compacted is not None and again.compacted.entries == 35
    check_transition(settled, again)
    assert verify(json.loads(json.dumps(status_fields(again, SPEC, key=KEY))), key=KEY) == again


def test_a_compacted_consumer_cannot_claim_twice() -> None:
    compacted = compact(settled_ledger(10), keep=0, key=KEY)
    assert compacted.claims == () and compacted.compacted_key(consumer(3).key)
    assert submit(compacted, SPEC, consumer(3), 1.0, 1e-6, NOW).ledger == compacted


def test_a_compacted_record_that_lost_an_entry_is_caught() -> None:
    ledger = settled_ledger(10)
    compacted = compact(ledger, keep=2, key=KEY)
    status = json.loads(json.dumps(status_fields(compacted, SPEC, key=KEY)))
    status["compacted"]["mechanisms"][0]["count"] -= 1
    with pytest.raises(ValueError, match="compacted record"):
        verify(status, key=KEY)
    assert compacted.compacted is not None
    fewer = Ledger(compacted.claims, compacted.epsilon_unlocked, compacted.compacted.__class__(
        compacted.compacted.entries, compacted.compacted.keys, (), 0.0, 0.0, compacted.compacted.previous))  # fmt: skip
    with pytest.raises(ValueError, match="does not hold exactly"):
        check_transition(ledger, fewer)


def test_the_status_stays_small_per_entry() -> None:
    """A DP-SGD entry with its digests is under 700 bytes of JSON, so 1000 entries take under 0.7 MiB
    of etcd's 1.5 MiB; a compacted entry costs its key, about 50 bytes."""
    claims = tuple(
        Claim(
            consumer(i),
            1.999993810800726,
            1e-5,
            ClaimState.COMMITTED,
            NOW,
            mechanism=RUNS[i % 2],
            dispatched=NOW,
            started=NOW,
        )
        for i in range(200)
    )
    ledger = Ledger(claims)
    size = len(json.dumps(status_fields(ledger, SPEC, key=KEY), separators=(",", ":")))
    assert size / 200 < 700
    compacted = compact(ledger, keep=0, key=KEY)
    small = len(json.dumps(status_fields(compacted, SPEC, key=KEY), separators=(",", ":")))
    assert small / 200 < 70


def test_a_ledger_holds_spend_while_a_committed_claim_is_in_it_folded_or_not() -> None:
    """What deleting a budget waits for: a Reserved or Committed claim, also once compaction folded it; Released
    claims folded alone leave nothing spent (the admission policy decides the same from the stored status)."""
    live = settled_ledger(10, live=(7,))
    assert live.holds_spend
    released = Ledger()
    for index in range(6):
        released = submit(released, SPEC, consumer(index), 1.0, 1e-6, NOW, mechanism=RUNS[0]).ledger
        released = release(released, SPEC, consumer(index).key, NOW).ledger
    assert not released.holds_spend
    folded = compact(released, keep=0, key=KEY)
    assert folded.compacted is not None and folded.compacted.entries == 6 and not folded.holds_spend
    status = status_fields(folded, SPEC, key=KEY)
    assert status["compacted"]["mechanisms"] == []  # what the policy reads
    spent = commit(submit(released, SPEC, consumer(6), 1.0, 1e-6, NOW, mechanism=RUNS[1]).ledger, SPEC,
                   consumer(6).key, NOW).ledger  # fmt: skip
    folded_spent = compact(spent, keep=0, key=KEY)
    assert folded_spent.claims == () and folded_spent.holds_spend
    assert status_fields(folded_spent, SPEC, key=KEY)["compacted"]["mechanisms"]
