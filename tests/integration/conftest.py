"""Integration fixtures: the CRDs installed in the real API server, and the operator as a process."""

import contextlib
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from securemodel.api import KINDS

REPO = Path(__file__).resolve().parents[2]
OPERATOR = Path(sys.executable).parent / "securemodel-operator"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here talks to the real API server: mark it ``integration``."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def crds(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Install (or update) the generated CRDs and wait until the API server serves them."""
    applied = kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    assert applied.returncode == 0, applied.stderr
    names = [f"crd/{kind.crd_name}" for kind in KINDS]
    established = kubectl("wait", "--for=condition=Established", "--timeout=60s", *names, timeout=90)
    assert established.returncode == 0, established.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Operator:
    """A running ``securemodel-operator`` process."""

    def __init__(self, process: subprocess.Popen[bytes], health_url: str, log: Path) -> None:
        self.process = process
        self.health_url = health_url
        self.log = log

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_operator(tmp_path: Path, kubeconfig: Path, wait_for: Callable[..., Any]) -> Iterator[Callable[..., Operator]]:
    """``start_operator(namespace, config=...)``: run the operator until the test ends.

    It serves ``namespace``, or all namespaces when that is None (as it does in the cluster).
    """
    running: list[Operator] = []

    def start(namespace: str | None, config: Path = kubeconfig) -> Operator:
        port = _free_port()
        log = tmp_path / f"operator-{len(running)}.log"
        scope = ["--namespace", namespace] if namespace else []
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(OPERATOR), *scope, "--health", f"http://127.0.0.1:{port}/healthz"],
                env={"KUBECONFIG": str(config), "PATH": str(OPERATOR.parent), "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        operator = Operator(process, f"http://127.0.0.1:{port}/healthz", log)
        running.append(operator)
        wait_for(lambda: operator.healthy() or process.poll() is not None, what="the operator's health endpoint")
        assert process.poll() is None, f"the operator exited:\n{operator.logs()}"
        return operator

    yield start
    for operator in running:
        operator.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            operator.process.wait(timeout=20)
        if operator.process.poll() is None:
            operator.process.kill()
            operator.process.wait()
        print(f"--- operator log ({operator.log}) ---\n{operator.logs()}")
