"""The audit trail of the serve worker: one JSON line per request on the mutual-TLS port.

Each line is a JSON object with exactly these keys::

    {"time": "2026-11-21T10:00:00.123456Z", "event": "request", "requestId": "2f1c...",
     "client": "frontend", "serial": "5e0c1d...", "model": "tumor", "version": "v1f2e3d4c",
     "endpoint": "infer", "status": 200, "latencyMs": 1.234, "batchSize": 2}

``time`` is when the request arrived (RFC 3339, UTC); ``requestId`` is also returned to the client
in the ``X-Request-Id`` header; ``client`` and ``serial`` name the client certificate (its CN,
``-`` if none, and its serial in hexadecimal); ``endpoint`` is the API route's name, bounded
whatever path was sent; ``version`` and ``batchSize`` are ``null`` when unknown (``batchSize`` is
set for inference requests that were parsed). Lines hold no inputs, outputs or request bodies.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TextIO


class AuditLog:
    """Writes the audit lines of model ``model`` (``version``) to ``stream``, each flushed at once."""

    def __init__(self, stream: TextIO, model: str, version: str | None) -> None:
        self._stream = stream
        self._model = model
        self._version = version

    def record(
        self,
        *,
        received: datetime,
        request_id: str,
        client: str,
        serial: str | None,
        endpoint: str,
        status: int,
        seconds: float,
        batch_size: int | None,
    ) -> None:
        """Write the line of one answered request."""
        line = {
            "time": rfc3339(received),
            "event": "request",
            "requestId": request_id,
            "client": client,
            "serial": serial,
            "model": self._model,
            "version": self._version,
            "endpoint": endpoint,
            "status": status,
            "latencyMs": round(seconds * 1000, 3),
            "batchSize": batch_size,
        }
        self._stream.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._stream.flush()


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with microseconds and a ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
