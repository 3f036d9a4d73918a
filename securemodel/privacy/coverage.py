"""Which data a PrivacyBudget protects and who may spend it (pure).

A budget declares the data it protects in ``spec.data.sources``; each entry is a pattern:

* a source, ``builtin://<name>`` or ``pvc://<claim>/<path>``: that dataset and every shard of it
  (``builtin://<name>`` is the training part of a built-in dataset; its public evaluation part,
  ``?part=evaluation``, is other data);
* a source with a shard, ``...?shard=i&of=n``: that shard only;
* a prefix ending in ``/``, ``pvc://<claim>/`` or ``pvc://<claim>/<dir>/``: every file under it.

Guarantees the operator builds on (each has a unit test):

* **Binding.** A consumer is charged to a budget only if the budget covers the consumer's source
  (:func:`covers`): pointing ``budgetRef`` at an empty budget cannot buy a fresh ε for data another
  budget protects, because that budget would not cover the source.
* **One ledger per datum.** Two budgets of one namespace must not cover common data
  (:func:`overlaps`, conservative: shards of different splits of one dataset overlap). While they
  do, both grant nothing, so neither can reset the other's spend. The sources of a budget may only
  grow (a CEL transition rule), so a budget never drops data it has charged for.
* **Public only where no budget reaches.** Data a consumer declares public (a public training, an
  evaluation source, starting weights from a file) must share no example with what any budget of the
  namespace protects (:func:`touches`).
* **Consent.** A budget is spent by consumers of its own namespace and by those of the namespaces
  and kinds its ``spec.consumers`` names, nobody else (:func:`consents`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from securemodel.data.sources import BuiltinSource, PvcSource, SourceError, parse_source

PREFIX = "/"


@dataclass(frozen=True)
class _Pattern:
    """A parsed pattern: a dataset key (scheme, where) and its shard, or a prefix of keys."""

    key: str  # "builtin://name", "pvc://claim/path" or, for a prefix, "pvc://claim/dir/"
    prefix: bool
    shard: tuple[int, int] | None


def _parse(pattern: str) -> _Pattern:
    """Raises SourceError for anything that is neither a source nor a ``pvc://`` prefix."""
    if pattern.endswith(PREFIX):
        if not pattern.startswith("pvc://") or "?" in pattern or len(pattern.removeprefix("pvc://")) < 2:
            raise SourceError(f"{pattern!r}: a prefix is pvc://<claim>/ or pvc://<claim>/<dir>/")
        return _Pattern(pattern, True, None)
    source = parse_source(pattern)
    shard = (source.shard.index, source.shard.count) if source.shard is not None else None
    match source:
        case BuiltinSource(name=name, evaluation=evaluation):  # the public evaluation part is other data
            return _Pattern(f"builtin://{name}?part=evaluation" if evaluation else f"builtin://{name}", False, shard)
        case PvcSource(claim=claim, path=path):
            return _Pattern(f"pvc://{claim}/{path}", False, shard)
    raise AssertionError(source)  # pragma: no cover - parse_source returns one of the two


def validate(patterns: Iterable[str]) -> list[str]:
    """The errors of ``spec.data.sources``, one per malformed pattern (empty when all parse)."""
    errors = []
    for pattern in patterns:
        try:
            _parse(pattern)
        except SourceError as error:
            errors.append(str(error))
    return errors


def _covers(pattern: _Pattern, data: _Pattern) -> bool:
    if pattern.prefix:
        return data.key.startswith(pattern.key)
    if data.prefix or pattern.key != data.key:
        return False
    return pattern.shard is None or pattern.shard == data.shard


def covers(patterns: Sequence[str], source: str) -> bool:
    """Whether a budget with ``spec.data.sources`` = ``patterns`` protects all of ``source``.

    A malformed pattern covers nothing; a malformed source is covered by nothing.
    """
    try:
        data = _parse(source)
    except SourceError:
        return False
    return any(_covers(pattern, data) for pattern in _parsed(patterns))


def touches(patterns: Sequence[str], source: str) -> bool:
    """Whether a budget with ``spec.data.sources`` = ``patterns`` may protect ANY example of ``source``: then no
    part of ``source`` may be declared public (a shard of it, or another split's shard, counts; see :func:`overlaps`).

    Stricter than :func:`covers`, which asks whether the budget protects all of it (what it may be charged for).
    """
    return bool(overlaps(patterns, [source]))


def overlaps(first: Sequence[str], second: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs of patterns of two budgets that may name a common example (empty when disjoint).

    Two shards of one dataset are disjoint only when they are different shards of the same split
    (same ``of``); every other pair of patterns on one dataset, or a prefix over the other, overlaps.
    """
    pairs = []
    for a in first:
        for b in second:
            try:
                pa, pb = _parse(a), _parse(b)
            except SourceError:
                continue
            if _intersect(pa, pb):
                pairs.append((a, b))
    return pairs


def _intersect(a: _Pattern, b: _Pattern) -> bool:
    if a.prefix or b.prefix:
        return (a.prefix and b.key.startswith(a.key)) or (b.prefix and a.key.startswith(b.key))
    if a.key != b.key:
        return False
    if a.shard is None or b.shard is None or a.shard[1] != b.shard[1]:
        return True
    return a.shard == b.shard


def consents(consumers: Sequence[Mapping[str, str]], kind: str, consumer_namespace: str, budget_namespace: str) -> bool:
    """Whether a budget in ``budget_namespace`` with ``spec.consumers`` lets a ``kind`` of ``consumer_namespace`` spend it.

    Its own namespace always may; another namespace only where an entry names that namespace and
    that kind.
    """
    if consumer_namespace == budget_namespace:
        return True
    return any(c.get("namespace") == consumer_namespace and c.get("kind") == kind for c in consumers)


def _parsed(patterns: Iterable[str]) -> list[_Pattern]:
    parsed = []
    for pattern in patterns:
        try:
            parsed.append(_parse(pattern))
        except SourceError:
            continue
    return parsed
