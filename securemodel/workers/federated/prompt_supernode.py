"""Flower's ``flower-supernode``, asking for its next message every :data:`PULL_INTERVAL` seconds, not every 3.

A SuperNode asks the SuperLink for a message and, when none is waiting, sleeps a fixed 3 s (``time.sleep(3)``
in the loop of ``flwr.supernode.start_client_internal``; Flower 1.42 has no setting for it). So every message
of a round reaches a silo 1.5 s late on average, and a protocol stage waits for its slowest silo: SecAgg+ sends
each silo four messages a round. The same module waits 0.5 s at a time for a reply ready to push.

:func:`main` runs Flower's own ``flower-supernode`` entry point in this process after giving that one module a
clock whose ``sleep`` lasts at most :data:`PULL_INTERVAL` (:func:`install`). Nothing else changes: the requests,
their signatures and TLS are Flower's; an idle silo makes one more request to the SuperLink every
:data:`PULL_INTERVAL` seconds instead of every 3.
"""

from __future__ import annotations

import time
from typing import Any, Final

from flwr.supernode import start_client_internal
from flwr.supernode.cli import flower_supernode

# Seconds an idle SuperNode waits before asking again (Flower's: 3), and at most between two looks for a reply.
PULL_INTERVAL: Final = 0.2


class PromptClock:
    """The :mod:`time` module, with :meth:`sleep` lasting at most :data:`PULL_INTERVAL` seconds."""

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(seconds, PULL_INTERVAL))

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def install() -> None:
    """Give the SuperNode's message loop a :class:`PromptClock`; fails if that loop no longer sleeps on ``time``."""
    clock = getattr(start_client_internal, "time", None)
    if isinstance(clock, PromptClock):
        return
    if clock is not time:
        raise RuntimeError("flwr.supernode.start_client_internal no longer uses the time module: review this wrapper")
    start_client_internal.time = PromptClock()  # type: ignore[assignment]


def main() -> None:
    """``flower-supernode`` with the prompt clock (same arguments)."""
    install()
    flower_supernode()


if __name__ == "__main__":
    main()
