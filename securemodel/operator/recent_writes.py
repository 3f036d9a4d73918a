"""The children a reconciler wrote that its watch has not shown it yet.

A write's watch event reaches kopf's index some time after the write; a pass of the reconciler in
between (woken by another event) would see the child missing or as it was, and write it again: in
a burst of 300 models, four in five NetworkPolicies were applied twice and many Secrets created a second
time (409), whose failure also held back the model's next Secrets until a later pass.

:class:`RecentWrites` keeps each write's response, as the index would keep it
(:func:`~securemodel.operator.kube.child_entry`: a Job's pod template, most of its size, is not
kept), until the index moves past the version the write replaced, and :meth:`RecentWrites.over`
shows the response in place of that older view.
The watch delivers an object's versions in order, so an index showing any other version than the
replaced one shows the write or what came after it: from then on the index alone is the truth.
A response is kept at most :data:`KEPT_SECONDS` (a watch that relisted may skip versions), after
which the index alone decides again: the worst a stale response can cost is a write that waits
for the next pass, never a write made from a view older than the index.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from securemodel.operator.kube import child_entry

KEPT_SECONDS: Final = 30.0


@dataclass(frozen=True)
class _Write:
    body: Mapping[str, Any]  # what the index keeps of the API server's response to the write
    replaced: str | None  # the resourceVersion the index showed when the write was decided (None: absent)
    at: float  # the clock's time of the write


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return obj["metadata"].get("resourceVersion") if obj is not None else None


class RecentWrites:
    """One reconciler's writes of its children, by kind and name, until its indexes show them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._writes: dict[tuple[str, str], _Write] = {}
        self._clock = clock

    def wrote(self, written: Mapping[str, Any] | None, seen: Mapping[str, Any] | None) -> None:
        """Remember ``written`` (a write's response; None: nothing was written), which replaced ``seen`` (the
        object as the index showed it, None if absent)."""
        if written is None:
            return
        metadata = written["metadata"]
        key = (written["kind"], metadata["name"])
        earlier = self._writes.get(key)
        if earlier is not None and _version(earlier.body) == _version(seen):  # ``seen`` was that earlier write
            replaced = earlier.replaced
        else:
            replaced = _version(seen)
        self._writes[key] = _Write(child_entry(written["kind"], written), replaced, self._clock())

    def over(self, kind: str, indexed: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
        """``indexed`` (objects of ``kind`` by name, as the index shows them), with this reconciler's writes the
        index does not show yet in place of what they replaced."""
        shown = dict(indexed)
        now = self._clock()
        for (written_kind, name), write in list(self._writes.items()):
            if written_kind != kind:
                continue
            if _version(indexed.get(name)) != write.replaced or now - write.at > KEPT_SECONDS:
                del self._writes[(written_kind, name)]  # the index caught up (or is trusted again)
            else:
                shown[name] = write.body
        return shown
