"""Compaction: settled entries folded into one record, so a budget's ledger fits one API object.

A PrivacyBudget lives in one etcd object (1.5 MiB by default, the request
limit of etcd, for spec, status and metadata together). A ledger entry with a
DP-SGD mechanism, both settlement marks and its chain digests takes about 570
bytes of JSON, so leaving 64 KiB for the rest of the object about 2,600 entries
fit (``bench/composition.py`` measures it). Every write parses, verifies,
hashes and serialises the whole ledger, and every watch event carries it, so
the operator compacts well before that: above :data:`COMPACT_ABOVE` entries.

:func:`compact` folds the oldest settled entries into the compacted record
(:class:`~securemodel.privacy.claims.Compacted`), which keeps what the budget
needs of them exactly: their mechanisms counted per identical mechanism (so
the composition does not change), their summed epsilon and delta, and their
keys (about 50 bytes each, so a folded consumer cannot claim twice): with
compaction about 27,000 entries fit. The record continues the hash chain from
the last folded entry's digest.

Only a prefix of final entries (Committed, Released, Rejected) is folded: a
Waiting or Reserved entry and everything after it stay, so a long-running
reservation holds compaction back until it settles. Compact the ledger as it
was read, before applying a transaction's changes:
:func:`~securemodel.privacy.chain.check_transition` accepts folding only of
entries that were already final in the ledger it compares with.
"""

from __future__ import annotations

from typing import Final

from securemodel.api.privacy_budget import ClaimState
from securemodel.privacy.chain import digests
from securemodel.privacy.claims import Ledger, folded

# Compact when a ledger holds more entries than this, keeping the newest KEEP_NEWEST as they are.
COMPACT_ABOVE: Final = 1000
KEEP_NEWEST: Final = 200

_FINAL: Final = (ClaimState.COMMITTED, ClaimState.RELEASED, ClaimState.REJECTED)


def compact(ledger: Ledger, *, keep: int = KEEP_NEWEST, key: bytes = b"") -> Ledger:
    """``ledger`` with its longest prefix of final entries, short of the newest ``keep``, folded.

    ``key`` is the chain key the ledger is sealed with (the record links to the
    last folded entry's digest under it). Composition, sums and keys are
    unchanged; the ledger is returned as it is if nothing can be folded.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0; got {keep}")
    limit = max(0, len(ledger.claims) - keep)
    count = 0
    while count < limit and ledger.claims[count].state in _FINAL:
        count += 1
    if count == 0:
        return ledger
    offset = 1 if ledger.compacted is not None else 0
    previous = digests(ledger, key=key)[offset + count - 1]
    return Ledger(
        claims=ledger.claims[count:],
        epsilon_unlocked=ledger.epsilon_unlocked,
        compacted=folded(ledger.compacted, ledger.claims[:count], previous),
    )


def compacted_if_large(ledger: Ledger, *, key: bytes = b"") -> Ledger:
    """``ledger`` compacted (keeping :data:`KEEP_NEWEST`) once it holds more than :data:`COMPACT_ABOVE` entries."""
    if len(ledger.claims) <= COMPACT_ABOVE:
        return ledger
    return compact(ledger, keep=KEEP_NEWEST, key=key)
