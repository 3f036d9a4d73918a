"""Wake-ups: a task sleeps until something it depends on may have changed."""

import asyncio
import contextlib
from collections.abc import Hashable, Iterator

import kopf


class Wakeups:
    """Keys that change (e.g. a budget) and the tasks listening for them (e.g. its consumers).

    Listen before reading the state, then wait: a change notified after the read wakes the
    listener, so none is missed between reading and sleeping.
    """

    def __init__(self) -> None:
        self._listeners: dict[Hashable, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def listen(self, *keys: Hashable) -> Iterator[asyncio.Event]:
        """An Event that :meth:`notify` of any of ``keys`` sets while the block runs."""
        event = asyncio.Event()
        for key in keys:
            self._listeners.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            for key in keys:
                listeners = self._listeners[key]
                listeners.discard(event)
                if not listeners:
                    del self._listeners[key]

    def notify(self, key: Hashable) -> None:
        """Wake everything listening for ``key``."""
        for event in self._listeners.get(key, ()):
            event.set()


async def sleep_until(changed: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> None:
    """Until ``changed`` is set, the daemon is stopped, or ``timeout`` seconds pass."""
    waits = {asyncio.ensure_future(changed.wait()), asyncio.ensure_future(stopped.wait(timeout))}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
