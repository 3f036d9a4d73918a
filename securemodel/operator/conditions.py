"""Turn a decision about an object into its status and Events.

A kind's reconciler decides an :class:`Outcome` with a pure function; :func:`status_for`
turns it into ``status.observedGeneration``, ``status.phase`` and the conditions
(``lastTransitionTime`` only moves when a condition's status changes), and
:func:`event_for` into an Event when the phase or the Ready condition changes.

Every kind carries the conditions GitOps tools read (kstatus, as Flux and Argo CD use it):
``Ready``; ``Reconciling`` True while the operator is still working towards the spec;
``Stalled`` True when it cannot progress without a change of the spec or of something the
object depends on. Each condition records the ``observedGeneration`` it was decided for.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import kopf

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"


class Progress(StrEnum):
    """Where the operator stands with an object's spec (kstatus)."""

    DONE = "Done"  # the spec is reconciled (Ready may still be False, e.g. a budget that is exhausted)
    WORKING = "Working"  # Reconciling: work under way that needs no change from anyone
    STALLED = "Stalled"  # cannot progress until the spec or a dependency changes


@dataclass(frozen=True)
class Condition:
    """A condition the operator sets: ``type`` is True or False for ``reason``."""

    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Outcome:
    """What a handler decided: the phase, the Ready condition, and any other status."""

    phase: str
    ready: Condition
    conditions: tuple[Condition, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)
    warning: bool = False
    progress: Progress = Progress.DONE

    def kstatus(self) -> tuple[Condition, Condition]:
        """The ``Reconciling`` and ``Stalled`` conditions this outcome implies."""
        working, stalled = self.progress is Progress.WORKING, self.progress is Progress.STALLED
        return (
            Condition(RECONCILING, working, self.ready.reason if working else "Reconciled",
                      self.ready.message if working else "the spec is reconciled"),
            Condition(STALLED, stalled, self.ready.reason if stalled else "Progressing",
                      self.ready.message if stalled else "nothing blocks progress"),
        )  # fmt: skip


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the object."""

    type: str
    reason: str
    message: str


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes times."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    existing: Sequence[Mapping[str, Any]], wanted: Iterable[Condition], generation: int, now: datetime
) -> list[dict[str, Any]]:
    """The conditions to store: ``wanted`` replace those of the same type, others stay as they are."""
    by_type = {c["type"]: dict(c) for c in existing}
    for cond in wanted:
        status = "True" if cond.status else "False"
        previous = by_type.get(cond.type, {})
        since = previous.get("lastTransitionTime") if previous.get("status") == status else None
        by_type[cond.type] = {
            "type": cond.type,
            "status": status,
            "reason": cond.reason,
            "message": cond.message,
            "lastTransitionTime": since or timestamp(now),
            "observedGeneration": generation,
        }
    return list(by_type.values())


def status_for(outcome: Outcome, status: Mapping[str, Any], generation: int, now: datetime) -> dict[str, Any]:
    """The status fields to write for ``outcome`` given the object's current ``status``."""
    return {
        **outcome.fields,
        "observedGeneration": generation,
        "phase": outcome.phase,
        "conditions": merge_conditions(
            status.get("conditions") or [], (outcome.ready, *outcome.conditions, *outcome.kstatus()), generation, now
        ),
    }


def ready_status(status: Mapping[str, Any]) -> bool:
    """Whether the stored Ready condition in ``status`` is True."""
    return any(c.get("type") == READY and c.get("status") == "True" for c in status.get("conditions") or ())


def event_for(outcome: Outcome, status: Mapping[str, Any]) -> Event | None:
    """An Event when the phase or the Ready condition (status or reason) changes, else None."""
    previous: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == READY), {})
    ready = "True" if outcome.ready.status else "False"
    unchanged = (
        status.get("phase") == outcome.phase
        and previous.get("status") == ready
        and previous.get("reason") == outcome.ready.reason
    )
    if unchanged:
        return None
    return Event("Warning" if outcome.warning else "Normal", outcome.ready.reason, outcome.ready.message)


def publish(outcome: Outcome, body: kopf.Body, patch: kopf.Patch) -> None:
    """Write ``outcome`` into the status patch and post an Event if something changed."""
    status = body.get("status") or {}
    patch.status.update(status_for(outcome, status, body.metadata.get("generation", 0), datetime.now(UTC)))
    event = event_for(outcome, status)
    if event is not None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
