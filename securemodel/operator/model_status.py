"""Writing a SecureModel's status from its daemons: only what changed, and an Event when the phase or Ready does.

Each stage of a model has one daemon, the only writer of the status while it runs; the
daemon remembers what it wrote, because the body kopf hands it may not show its own last
write yet.
"""

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kopf

from securemodel.api import GROUP, VERSION
from securemodel.api.secure_model import KIND
from securemodel.operator.ledger import MERGE_PATCH
from securemodel.operator.runtime import Runtime
from securemodel.operator.status import Outcome, event_for, status_for


async def write_status(
    current: Runtime, body: kopf.Body, outcome: Outcome, written: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge ``outcome`` into the model's status unless it is already there; return all this daemon wrote.

    ``written`` is what this daemon wrote before. A ``None`` in the outcome's fields deletes the field.
    """
    known = {**(body.get("status") or {}), **written}
    status = status_for(outcome, known, body["metadata"].get("generation", 0), datetime.now(UTC))
    if contains(known, status):
        return dict(written)
    metadata = body["metadata"]
    await asyncio.to_thread(
        current.custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        metadata["namespace"],
        KIND.plural,
        metadata["name"],
        {"status": status},
        _content_type=MERGE_PATCH,
    )
    event = event_for(outcome, known)
    if event is not None:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    return {**written, **status}


def contains(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether merging ``patch`` into ``current`` would change nothing (a ``None`` deletes: absent is equal)."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(current.get(key), Mapping):
            if not contains(current[key], value):
                return False
        elif current.get(key) != value:
            return False
    return True
