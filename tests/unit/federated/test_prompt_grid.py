"""PromptGrid: a stage's replies are collected within half a second of the last one's arrival (Flower's grid: up
to 3 s), each once, and the stage ends at its timeout when a silo never answers; the rest goes to the run's grid.
Time is a fake clock that sleeping advances."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import pytest

from securemodel.workers.federated import prompt_grid
from securemodel.workers.federated.prompt_grid import PromptGrid


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SlowSilos:
    """A grid whose silos reply to message ``i`` at ``arrivals[i]`` seconds after the push (``None``: never)."""

    def __init__(self, clock: Clock, arrivals: list[float | None]) -> None:
        self.clock, self.arrivals = clock, arrivals
        self.pushed_at = 0.0
        self.node_ids = [7, 8]

    def push_messages(self, messages: Iterable[Any]) -> list[str]:
        self.pushed_at = self.clock.now
        return [f"m{i}" for i, _ in enumerate(messages)]

    def pull_messages(self, message_ids: Iterable[str]) -> list[Any]:
        """The replies that have arrived to the messages asked for."""
        elapsed = self.clock.now - self.pushed_at
        return [
            SimpleNamespace(metadata=SimpleNamespace(reply_to_message_id=m))
            for m in message_ids
            if (at := self.arrivals[int(m[1:])]) is not None and at <= elapsed
        ]

    def get_node_ids(self) -> list[int]:
        return self.node_ids


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(prompt_grid.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(prompt_grid.time, "sleep", fake.sleep)
    return fake


def test_the_stage_ends_within_one_interval_of_the_last_reply_with_each_reply_once(clock: Clock) -> None:
    silos = SlowSilos(clock, [0.0, 1.3, 4.05])
    replies = list(PromptGrid(silos).send_and_receive(["a", "b", "c"], timeout=60))  # type: ignore[arg-type]
    assert sorted(r.metadata.reply_to_message_id for r in replies) == ["m0", "m1", "m2"]
    waited = clock.now - silos.pushed_at
    assert 4.05 <= waited < 4.05 + 0.5  # Flower's own loop: 6 s (it pulls every 3 s)


def test_a_silo_that_never_answers_ends_the_stage_at_its_timeout_with_the_others_replies(clock: Clock) -> None:
    silos = SlowSilos(clock, [0.5, None])
    replies = list(PromptGrid(silos).send_and_receive(["a", "b"], timeout=10))  # type: ignore[arg-type]
    assert [r.metadata.reply_to_message_id for r in replies] == ["m0"]
    assert 10 <= clock.now - silos.pushed_at < 10 + 0.5


def test_everything_else_is_the_run_grids(clock: Clock) -> None:
    silos = SlowSilos(clock, [])
    assert list(PromptGrid(silos).get_node_ids()) == [7, 8]  # type: ignore[arg-type]
