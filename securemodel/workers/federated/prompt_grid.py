"""A Flower :class:`~flwr.server.Grid` that collects the silos' replies as soon as they arrive.

Flower's grid pulls the replies of a ``send_and_receive`` every 3 seconds (a fixed sleep in its
loop), so every stage of a round waits 1.5 s on average, up to 3 s, after the last silo answered:
SecAgg+ has four stages per round. :class:`PromptGrid` runs the same loop (push the messages, pull
until every reply is in or ``timeout`` has passed) with :data:`PULL_INTERVAL` between pulls, and
forwards every other call to the run's grid. It returns what Flower's loop returns: the replies
received before the timeout, each once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.server import Grid
from flwr.supercore.run import Run

# Seconds between two pulls of the replies (Flower's grid: 3). A pull is one request to the SuperLink.
PULL_INTERVAL: Final = 0.2


class PromptGrid(Grid):
    """``grid``, with :meth:`send_and_receive` pulling every :data:`PULL_INTERVAL` seconds."""

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self._grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        """Push ``messages``; the replies pulled until all are in or ``timeout`` seconds have passed (``None``:
        no limit)."""
        waiting = set(self.push_messages(messages))
        deadline = None if timeout is None else time.monotonic() + timeout
        replies: list[Message] = []
        while waiting:
            pulled = list(self.pull_messages(waiting))
            replies.extend(pulled)
            waiting.difference_update(reply.metadata.reply_to_message_id for reply in pulled)
            if not waiting or (deadline is not None and time.monotonic() >= deadline):
                break
            time.sleep(PULL_INTERVAL)
        return replies
