"""The ledger's hash chain: every entry holds its predecessor's digest, the status holds the head.

Chain. Entries are chained in ledger order, starting from the compacted record
if there is one (:class:`~securemodel.privacy.claims.Compacted`): each entry's
``previous`` is its predecessor's ``digest`` (the empty string for the first),
and its ``digest`` is ``HMAC-SHA256(key, DOMAIN || previous || "\\n" ||
canonical(entry))`` in lowercase hex. ``status.ledgerHead`` is the same MAC,
chained on the last digest, over ``{"entries": N, "epsilonUnlocked": u}`` (N
counts the compacted entries too): it seals the end of the ledger and DPF's
unlocked amount.

Canonical form. The entry as ``Claim.to_dict`` writes it (typed: a field read
back as an int by the API server is a float again), the chain fields left out,
serialised as JSON with sorted keys, no whitespace, ASCII only, and every float
written as a string in C99 hexadecimal notation (Python's ``float.hex``, e.g.
``2.0`` is ``"0x1.0000000000000p+1"``): exact, and the same in any language,
unlike decimal float printing.

What a digest covers. All of an entry, its state and ``updated`` time included.
A state change (Waiting -> Reserved -> Committed) therefore changes the
entry's digest and re-links every later entry; only a writer holding the key
can do that. The chain is recomputed on every write (a thousand HMACs, about a
millisecond).

What it protects against, and what it does not:

* With ``key`` empty the MAC is a public function: anyone can verify the chain,
  and anyone who can write the status can also recompute it. It then detects
  edits that do not recompute it (a JSON patch removing ``/status/claims/0``,
  a changed state or epsilon, a reordering) and says precisely where.
* With a secret ``key`` (held by the operator only, e.g. in a Secret only its
  service account can read; :func:`budget_key` binds it to one budget), a
  writer of ``privacybudgets/status`` without the key cannot produce a chain
  that verifies: any removal, insertion, reordering or change of an entry, of
  the compacted record or of ``epsilonUnlocked`` is detected on the next read.
* Neither stops a replay: writing back an older status the operator itself
  sealed (its claims fewer or less advanced) verifies. That is caught by
  :func:`check_transition` against the last ledger the operator wrote or read
  (forbidden: removing an entry, changing a Committed one, moving a state
  backwards), and prevented by admission control (only the operator may write
  the status). A status wiped entirely looks like a budget never written:
  ``verify(..., require_seal=True)`` refuses it once the operator has sealed
  the budget (it must know that from outside the status, e.g. an annotation or
  finalizer on the main resource, which the status subresource cannot change).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from securemodel.api.privacy_budget import ClaimState
from securemodel.privacy.claims import Claim, Compacted, Ledger, folded
from securemodel.privacy.mechanisms import spends_at_most

DOMAIN: Final = b"securemodel.io/ledger/v1\n"
HEAD: Final = "ledgerHead"
_FINAL: Final = (ClaimState.COMMITTED, ClaimState.RELEASED, ClaimState.REJECTED)
_FORWARD: Final = {
    ClaimState.WAITING: {ClaimState.WAITING, ClaimState.RESERVED, ClaimState.RELEASED, ClaimState.REJECTED},
    ClaimState.RESERVED: {ClaimState.RESERVED, ClaimState.COMMITTED, ClaimState.RELEASED},
}


class LedgerTampered(ValueError):
    """The ledger read is not one the operator wrote, or not a permitted successor of it.

    ``index`` is the entry's position in ``status.claims`` (None for the
    compacted record or the ledger as a whole), ``consumer`` names the entry or
    record, and ``problem`` says what is wrong.
    """

    def __init__(self, index: int | None, consumer: str | None, problem: str) -> None:
        self.index, self.consumer, self.problem = index, consumer, problem
        if index is not None:
            where = f"entry {index} ({consumer}): " if consumer else f"entry {index}: "
        else:
            where = f"{consumer}: " if consumer else ""
        super().__init__(f"{where}{problem}")


def budget_key(secret: bytes, budget_uid: str) -> bytes:
    """The chain key of one budget: a ledger copied onto another budget does not verify there."""
    return hmac.new(secret, b"securemodel.io/ledger-key/" + budget_uid.encode(), hashlib.sha256).digest()


def canonical(record: Mapping[str, Any]) -> bytes:
    """``record`` in the canonical form hashed (see the module docstring)."""
    return json.dumps(_hex_floats(record), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def digest(previous: str, record: Mapping[str, Any], key: bytes = b"") -> str:
    """The chain digest of ``record`` after ``previous``."""
    message = DOMAIN + previous.encode() + b"\n" + canonical(record)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def digests(ledger: Ledger, *, key: bytes = b"") -> list[str]:
    """The digest of the compacted record (if any) and of each claim, in chain order."""
    chain: list[str] = []
    previous = ""
    if ledger.compacted is not None:
        previous = digest(ledger.compacted.previous, ledger.compacted.to_dict(), key)
        chain.append(previous)
    for claim in ledger.claims:
        previous = digest(previous, claim.to_dict(), key)
        chain.append(previous)
    return chain


def seal(ledger: Ledger, *, key: bytes = b"") -> dict[str, Any]:
    """``status.claims`` and ``status.compacted`` with their chain digests, and ``status.ledgerHead``."""
    chain = digests(ledger, key=key)
    fields: dict[str, Any] = {}
    offset = 0
    if ledger.compacted is not None:
        fields["compacted"] = {**ledger.compacted.to_dict(), "digest": chain[0]}
        offset = 1
    claims = []
    for index, claim in enumerate(ledger.claims):
        previous = chain[offset + index - 1] if offset + index else ""
        claims.append({**claim.to_dict(), "previous": previous, "digest": chain[offset + index]})
    fields["claims"] = claims
    fields[HEAD] = _head(chain[-1] if chain else "", ledger, key)
    return fields


def verify(status: Mapping[str, Any] | None, *, key: bytes = b"", require_seal: bool = True) -> Ledger:
    """The ledger of ``status`` if its chain verifies under ``key``; raise :class:`LedgerTampered` if not.

    A status with no ``ledgerHead`` and no digests anywhere (never sealed) is
    accepted only with ``require_seal=False``. The first problem found is
    raised, in chain order.
    """
    status = status or {}
    raw_claims: Sequence[Any] = status.get("claims") or ()
    raw_compacted = status.get("compacted")
    sealed = HEAD in status or bool(raw_compacted) or any(isinstance(r, Mapping) and "digest" in r for r in raw_claims)
    if not sealed:
        if require_seal:
            raise LedgerTampered(
                None, None, "the ledger has no ledgerHead: it was never sealed, or its seal was removed"
            )
        return _parse(status)
    ledger = _parse(status)
    stored = _stored_digests(raw_compacted, raw_claims)
    previous = ""
    if ledger.compacted is not None:
        if digest(ledger.compacted.previous, ledger.compacted.to_dict(), key) != stored[0][1]:
            raise LedgerTampered(None, "the compacted record", "its content does not match its digest: it was changed")
        previous = stored[0][1]
    offset = 1 if ledger.compacted is not None else 0
    known = {entry_digest: position for position, (_, entry_digest) in enumerate(stored)}
    for index, claim in enumerate(ledger.claims):
        linked, sealed_digest = stored[offset + index]
        if digest(linked, claim.to_dict(), key) != sealed_digest:
            raise LedgerTampered(index, str(claim.consumer), "its content does not match its digest: it was changed")
        if linked != previous:
            raise LedgerTampered(index, str(claim.consumer), _link_problem(index, linked, known, offset))
        previous = sealed_digest
    if status.get(HEAD) != _head(previous, ledger, key):
        raise LedgerTampered(
            None,
            None,
            "the ledgerHead does not seal this ledger: entries were removed from its end, "
            "epsilonUnlocked was changed, or the head was rewritten",
        )
    return ledger


def check_transition(old: Ledger, new: Ledger) -> None:
    """Raise :class:`LedgerTampered` unless ``new`` is a permitted successor of ``old``.

    Permitted: appending entries; moving an entry's state forward (Waiting ->
    Reserved, Released or Rejected; Reserved -> Committed or Released) and
    setting its dispatched and started marks (once), with its consumer and
    delta unchanged, its epsilon and mechanism unchanged except
    that a commit may record less (:func:`~securemodel.privacy.mechanisms.spends_at_most`);
    folding a prefix of final entries into the compacted record, which must
    then hold exactly what they held. Forbidden: removing or reordering an
    entry, changing a Committed, Released or Rejected one, moving a state
    backwards. ``epsilon_unlocked`` is not checked (lowering ``spec.epsilon`` caps it).
    """
    folded = _entries(new.compacted) - _entries(old.compacted)
    if folded < 0:
        raise LedgerTampered(None, "the compacted record", f"it lost {-folded} entries")
    if folded > len(old.claims):
        raise LedgerTampered(None, "the compacted record", f"it holds {folded} entries more than the ledger had")
    for index, claim in enumerate(old.claims[:folded]):
        if claim.state not in _FINAL:
            raise LedgerTampered(index, str(claim.consumer), f"a {claim.state.value} entry was compacted")
    if folded and _fold_content(old.compacted, old.claims[:folded]) != _content(new.compacted):
        raise LedgerTampered(None, "the compacted record", "it does not hold exactly the entries folded into it")
    if not folded and _content(old.compacted) != _content(new.compacted):
        raise LedgerTampered(None, "the compacted record", "it was changed")
    kept = old.claims[folded:]
    for index, before in enumerate(kept, start=folded):
        after = new.claims[index - folded] if index - folded < len(new.claims) else None
        if after is None or after.consumer.key != before.consumer.key:
            missing = "it was removed" if new.claim(before.consumer.key) is None else "the entries were reordered"
            raise LedgerTampered(index, str(before.consumer), missing)
        problem = _change_problem(before, after)
        if problem:
            raise LedgerTampered(index, str(before.consumer), problem)


def _change_problem(before: Claim, after: Claim) -> str | None:
    if before == after:
        return None
    if before.state in _FINAL:
        return f"it was {before.state.value}, which is final, and was changed"
    if after.state not in _FORWARD[before.state]:
        return f"its state moved backwards, from {before.state.value} to {after.state.value}"
    if after.consumer != before.consumer or after.delta != before.delta:
        return "its consumer or delta was changed"
    for mark in ("dispatched", "started"):
        if getattr(before, mark) is not None and getattr(after, mark) != getattr(before, mark):
            return f"its {mark} mark was removed or changed"
    if after.state is ClaimState.COMMITTED:
        if after.epsilon > before.epsilon or not spends_at_most(after.mechanism, before.mechanism):
            return "it was committed with more than it reserved"
    elif after.epsilon != before.epsilon or after.mechanism != before.mechanism:
        return "its epsilon or mechanism was changed"
    return None


def _parse(status: Mapping[str, Any]) -> Ledger:
    for index, entry in enumerate(status.get("claims") or ()):
        try:
            Claim.from_dict(entry)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise LedgerTampered(index, None, f"it cannot be read: {error!r}") from None
    try:
        return Ledger.from_status(status)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise LedgerTampered(None, None, f"the ledger cannot be read: {error!r}") from None


def _stored_digests(raw_compacted: Any, raw_claims: Sequence[Any]) -> list[tuple[str, str]]:
    """(previous, digest) as stored, for the compacted record (if any) then each claim."""
    stored: list[tuple[str, str]] = []
    if raw_compacted:
        stored.append((str(raw_compacted.get("previous", "")), str(raw_compacted.get("digest", ""))))
    for raw in raw_claims:
        stored.append((str(raw.get("previous", "")), str(raw.get("digest", ""))))
    return stored


def _link_problem(index: int, linked: str, known: Mapping[str, int], offset: int) -> str:
    if linked in known and known[linked] >= offset + index:
        return f"it links to entry {known[linked] - offset}, which comes after it: the entries were reordered"
    if linked in known:
        return (
            f"it links to entry {known[linked] - offset}, not to the entry before it: "
            "the entries between them were removed"
        )
    if index == 0 and not linked:
        return "it starts the chain, but the compacted record before it was removed"
    before = "the entry before it was removed or rewritten" if index else "the entries before it were removed"
    return f"it links to a digest no entry has: {before}"


def _head(last: str, ledger: Ledger, key: bytes) -> str:
    entries = _entries(ledger.compacted) + len(ledger.claims)
    return digest(last, {"entries": entries, "epsilonUnlocked": ledger.epsilon_unlocked}, key)


def _entries(compacted: Compacted | None) -> int:
    return compacted.entries if compacted is not None else 0


def _content(compacted: Compacted | None) -> tuple[Any, ...] | None:
    """What a compacted record holds, without its chain link."""
    if compacted is None:
        return None
    return (compacted.entries, compacted.keys, compacted.mechanisms, compacted.epsilon_summed, compacted.delta_summed)


def _fold_content(compacted: Compacted | None, claims: Sequence[Claim]) -> tuple[Any, ...] | None:
    """What a compacted record holds once ``claims`` (all final) are folded into ``compacted``."""
    return _content(folded(compacted, claims, previous=""))


def _hex_floats(value: Any) -> Any:
    if isinstance(value, float):
        return value.hex()
    if isinstance(value, Mapping):
        return {name: _hex_floats(item) for name, item in value.items()}
    if isinstance(value, list | tuple):
        return [_hex_floats(item) for item in value]
    return value
