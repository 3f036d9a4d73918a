"""The aggregator's wait for its Flower run: ``flwr ls`` (a process each) every few seconds while the federation
runs, at once when the ServerApp's result says it ended, and ``flwr stop`` at the timeout. Time is a fake clock
that sleeping advances; ``flwr`` is a fake that counts what it was asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from securemodel.workers.federated import aggregate
from securemodel.workers.federated.aggregate import STATUS_INTERVAL, AggregationError, wait_for_run
from securemodel.workers.federated.contract import write_result

INTERVAL = 0.2


class Run:
    """A Flower run the ServerApp ends at ``ends_at`` (writing its result); Flower reports it finished
    ``lag`` seconds later. ``None``: it never ends."""

    def __init__(self, output_dir: Path, ends_at: float | None, lag: float = 0.5, outcome: str = "Succeeded") -> None:
        self.output_dir, self.ends_at, self.lag, self.outcome = output_dir, ends_at, lag, outcome
        self.now = 0.0
        self.asked: list[float] = []
        self.stopped = False
        write_result(output_dir, {"status": "Running"})

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.ends_at is not None and self.now >= self.ends_at:
            write_result(self.output_dir, {"status": self.outcome})

    def monotonic(self) -> float:
        return self.now

    def status(self, run_id: str, env: dict[str, str]) -> dict[str, Any]:
        self.asked.append(self.now)
        finished = self.ends_at is not None and self.now >= self.ends_at + self.lag
        return {"run-id": run_id, "status": "finished:completed" if finished else "running"}

    def flwr(self, args: list[str], env: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
        assert args[0] == "stop"
        self.stopped = True
        return {"success": True}


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Run:
    fake = Run(tmp_path, *request.param)
    monkeypatch.setattr(aggregate, "time", fake)
    monkeypatch.setattr(aggregate, "run_status", fake.status)
    monkeypatch.setattr(aggregate, "_flwr", fake.flwr)
    return fake


@pytest.mark.parametrize("run", [(60.0,), (60.0, 0.5, "Failed")], indirect=True)
def test_a_long_run_is_asked_about_every_few_seconds_and_seen_finished_promptly(run: Run, tmp_path: Path) -> None:
    status = wait_for_run("7", {}, tmp_path, timeout=600, interval=INTERVAL)
    assert status["status"] == "finished:completed"
    while_running = [t for t in run.asked if t < run.ends_at]
    assert len(while_running) <= 60 / STATUS_INTERVAL + 1  # not one process per interval
    assert all(b - a >= STATUS_INTERVAL - 1e-9 for a, b in zip(while_running, while_running[1:]))
    assert run.asked[-1] <= run.ends_at + run.lag + 2 * INTERVAL  # within an interval of Flower's finish
    assert not run.stopped


@pytest.mark.parametrize("run", [(None,)], indirect=True)
def test_a_run_that_never_ends_is_stopped_at_the_timeout(run: Run, tmp_path: Path) -> None:
    with pytest.raises(AggregationError, match="did not finish within 30s and was stopped"):
        wait_for_run("7", {}, tmp_path, timeout=30, interval=INTERVAL)
    assert run.stopped and 30 <= run.now <= 30 + STATUS_INTERVAL
