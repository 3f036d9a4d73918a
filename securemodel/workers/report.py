"""A worker's result: one JSON line on stdout and, in a pod, the container's termination message.

The operator reads the result from ``status.containerStatuses[].state.terminated.message``,
which the kubelet fills from ``/dev/termination-log`` (at most 4096 bytes). Results never
hold key material: only parameters, counts, accuracies, sizes, digests, paths and errors.
The serve worker, whose stdout is the audit trail, writes only a refusal there
(:func:`write_refusal`): ``{"reason": ..., "message": ...}``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

TERMINATION_LOG: Final[Path] = Path("/dev/termination-log")
# Kubernetes keeps 4096 bytes of a termination message; a result is a few hundred bytes plus
# at most this much error text.
MAX_ERROR_CHARS: Final[int] = 1000


def describe_error(err: BaseException) -> str:
    """``Type: message``, cut to :data:`MAX_ERROR_CHARS`."""
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def emit(result: dict[str, Any], termination_log: Path | None) -> str:
    """Print ``result`` as one JSON line and write it to ``termination_log`` if that file exists and is writable.

    The file is never created: outside a pod there is no termination log. Returns the line.
    """
    line = json.dumps(result, separators=(",", ":"), sort_keys=True, allow_nan=False)
    print(line, flush=True)
    _write(line, termination_log)
    return line


def write_refusal(reason: str, message: str, termination_log: Path | None) -> str:
    """Write ``{"reason": reason, "message": message}`` (message cut to :data:`MAX_ERROR_CHARS`) to
    ``termination_log`` if that file exists and is writable, and nowhere else; returns the line."""
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    line = json.dumps({"reason": reason, "message": message}, separators=(",", ":"), sort_keys=True)
    _write(line, termination_log)
    return line


def _write(line: str, termination_log: Path | None) -> None:
    """The file is never created: outside a pod there is no termination log."""
    if termination_log is not None and termination_log.is_file() and os.access(termination_log, os.W_OK):
        termination_log.write_text(line + "\n")
