"""Publishing a reconciler's outcome to its object's status: only what changed, and never masking another's edit."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf

from securemodel.api import GROUP, VERSION
from securemodel.api.kinds import Kind
from securemodel.operator import kube
from securemodel.operator.conditions import Outcome, event_for, status_for
from securemodel.operator.runtime import Runtime


@dataclass
class Published:
    """What a daemon wrote to the status since the body last showed its own write, and that write's version."""

    status: dict[str, Any] = field(default_factory=dict)
    resource_version: str | None = None

    def known(self, body: kopf.Body) -> dict[str, Any]:
        """The status as it stands: the body's, plus this daemon's writes the body does not show yet.

        Once the body shows this daemon's last write, the body alone is the truth: a later change by
        anyone else (a forged field) is then seen, and overwritten by the next pass.
        """
        stored = dict(body.get("status") or {})
        if body["metadata"].get("resourceVersion") == self.resource_version:
            self.status = {}
        return {**stored, **self.status}


async def write_status(current: Runtime, kind: Kind, body: kopf.Body, outcome: Outcome, published: Published) -> None:
    """Merge ``outcome`` into the object's status unless it is already there (a ``None`` field deletes the field),
    and post the Event of a change of phase or readiness."""
    known = published.known(body)
    status = status_for(outcome, known, body["metadata"].get("generation", 0), datetime.now(UTC))
    status["display"] = kind.display({**known, **status})
    if kube.merge_contains(known, status):
        return
    metadata = body["metadata"]
    stored = await asyncio.to_thread(
        current.custom.patch_namespaced_custom_object_status, GROUP, VERSION, metadata["namespace"], kind.plural,
        metadata["name"], {"status": status}, field_manager=kube.FIELD_MANAGER, _content_type=kube.MERGE_PATCH,
    )  # fmt: skip
    published.status = {**published.status, **status}
    published.resource_version = stored["metadata"]["resourceVersion"]
    event = event_for(outcome, known)
    if event is not None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
