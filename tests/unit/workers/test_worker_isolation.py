"""The isolation gate: a pod's workload starts only once the pod can no longer reach the API server
(real sockets: a listening port stands for the reachable API server, a closed one for the policy)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from securemodel.workers import cli
from securemodel.workers.isolation import await_isolation, connects


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def test_the_gate_holds_while_the_api_server_answers(listener: socket.socket) -> None:
    host, port = listener.getsockname()
    assert connects(host, port)
    assert await_isolation(lambda: connects(host, port), within=0.3, interval=0.05) is None


def test_the_gate_opens_once_connections_fail_in_a_row(listener: socket.socket) -> None:
    host, port = listener.getsockname()
    listener.close()  # the policy now drops the pod's connections to the API server
    assert not connects(host, port)
    waited = await_isolation(lambda: connects(host, port), within=5, interval=0.01)
    assert waited is not None and waited < 5


def test_one_failed_connection_between_answered_ones_does_not_open_the_gate() -> None:
    answers = iter([True, False, True, False, False, True, False, False, False])
    attempts: list[bool] = []

    def probe() -> bool:
        attempts.append(next(answers))
        return attempts[-1]

    assert await_isolation(probe, within=5, failures=3, interval=0) is not None
    assert len(attempts) == 9  # only the three failures in a row at the end opened it


def test_without_the_api_servers_address_the_pod_fails_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    log = tmp_path / "termination-log"
    args = cli.build_parser().parse_args(["await-isolation", "--within", "1", "--termination-log", str(log)])
    assert args.run(args) == 1
    assert log.read_text().startswith("NetworkNotIsolated:")


def test_a_reachable_api_server_fails_the_pod_after_the_wait(
    listener: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = listener.getsockname()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(port))
    log = tmp_path / "termination-log"
    args = cli.build_parser().parse_args(["await-isolation", "--within", "0.5", "--termination-log", str(log)])
    assert args.run(args) == 1
    assert "NetworkPolicy is not enforced" in log.read_text()
