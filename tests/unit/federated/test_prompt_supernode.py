"""The prompt SuperNode: Flower's own ``flower-supernode``, whose idle silo asks for its next message within
0.2 s instead of 3 s; nothing but that one module's sleeps changes."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
import types

import pytest
from flwr.supernode import start_client_internal

from securemodel.workers.federated import prompt_supernode
from securemodel.workers.federated.prompt_supernode import PULL_INTERVAL, PromptClock, install


@pytest.fixture
def loop_module(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """Flower's SuperNode loop module, given back its own clock after the test."""
    monkeypatch.setattr(start_client_internal, "time", time)
    return start_client_internal


def test_flowers_idle_silo_still_waits_three_seconds_on_the_time_module() -> None:
    """What the wrapper shortens is there: on a Flower whose loop changed, this fails and the wrapper is reviewed."""
    loop = inspect.getsource(start_client_internal.start_client_internal)
    assert "time.sleep(3)" in loop
    assert start_client_internal.time is time or isinstance(start_client_internal.time, PromptClock)


def test_the_loops_sleeps_last_at_most_the_pull_interval(
    loop_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    install()
    loop_module.time.sleep(3)  # idle: no message waiting
    loop_module.time.sleep(0.5)  # a reply not ready yet
    loop_module.time.sleep(0.05)
    assert slept == [PULL_INTERVAL, PULL_INTERVAL, 0.05]
    assert loop_module.time.monotonic is time.monotonic  # everything else is the time module's


def test_install_twice_keeps_one_prompt_clock_and_leaves_the_time_module_alone(loop_module: types.ModuleType) -> None:
    original_sleep = time.sleep
    install()
    clock = loop_module.time
    install()
    assert loop_module.time is clock and isinstance(clock, PromptClock)
    assert time.sleep is original_sleep  # Flower's other modules (the SuperExec, gRPC retries) sleep as before


def test_a_loop_that_no_longer_sleeps_on_time_is_refused(
    loop_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop_module, "time", types.SimpleNamespace(sleep=time.sleep))
    with pytest.raises(RuntimeError, match="review this wrapper"):
        install()


def test_the_module_runs_flowers_own_supernode_command_line() -> None:
    command = [sys.executable, "-m", prompt_supernode.__name__, "--help"]
    shown = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "--superlink" in shown.stdout and "--auth-supernode-private-key" in shown.stdout
