"""Integration fixtures: the CRDs and the admission policy in the real API server, and the operator as a process."""

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from securemodel.api import GROUP, KINDS, VERSION

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


@pytest.fixture(scope="session", autouse=True)
def no_cluster_operator(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Stop an in-cluster operator (``make demo`` leaves one): the tests run their own, one per namespace."""
    deleted = kubectl("-n", "securemodel-system", "delete", "deployment", "securemodel-operator",
                      "--ignore-not-found", "--wait=true", "--timeout=120s")  # fmt: skip
    assert deleted.returncode == 0, deleted.stderr
    gone = kubectl("-n", "securemodel-system", "wait", "--for=delete", "pod",
                   "-l", "app.kubernetes.io/name=securemodel-operator", "--timeout=120s")  # fmt: skip
    assert gone.returncode == 0 or "no matching resources" in gone.stderr, gone.stderr


@pytest.fixture(scope="session")
def admin_user(kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> str:
    """The user name of the cluster's admin kubeconfig."""
    whoami = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
    assert whoami.returncode == 0 and whoami.stdout, whoami.stderr
    return whoami.stdout


@pytest.fixture(scope="session", autouse=True)
def admission_policy(kubectl: Callable[..., subprocess.CompletedProcess[str]], admin_user: str) -> None:
    """Install (or update) deploy/'s ValidatingAdmissionPolicies and their bindings, the deployed RBAC and roles.

    The operator these tests start runs as the admin (except in test_operator_rbac, which runs it as
    the deployed ServiceAccount), so the admin is added to the policy's ledger writers, as the chart's
    ``admissionPolicies.ledgerWriters`` would; tamper tests impersonate another cluster-admin.
    """
    policies = list(yaml.safe_load_all((REPO / "deploy" / "30-admission.yaml").read_text()))
    for policy in policies:
        for variable in policy.get("spec", {}).get("variables") or ():
            if policy["metadata"]["name"].startswith("privacybudget-ledger.") and variable["name"] == "writers":
                variable["expression"] = variable["expression"].rstrip().removesuffix("]") + f", '{admin_user}']"
    installed = kubectl("apply", *(arg for part in ("00-namespace", "10-rbac", "15-roles") for arg in ("-f", str(REPO / "deploy" / f"{part}.yaml"))))
    assert installed.returncode == 0, installed.stderr
    applied = kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(policies))
    assert applied.returncode == 0, applied.stderr


@pytest.fixture
def namespace(namespace: str, api_client: kubernetes.client.ApiClient) -> Iterator[str]:
    """The test's namespace; before it is deleted, the operator's finalizers are taken off its objects
    (and the settlement finalizer off its train pods).

    Tests stop the operator before this teardown (``start_operator`` depends on it), so
    nothing would remove them and the namespace would never finish terminating.
    """
    yield namespace
    core = kubernetes.client.CoreV1Api(api_client)
    for pod in core.list_namespaced_pod(namespace).items:
        if pod.metadata.finalizers:
            with contextlib.suppress(kubernetes.client.ApiException):
                core.patch_namespaced_pod(pod.metadata.name, namespace, {"metadata": {"finalizers": None}})
    custom = kubernetes.client.CustomObjectsApi(api_client)
    for kind in KINDS:
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)["items"]:
            if item["metadata"].get("finalizers"):
                with contextlib.suppress(kubernetes.client.ApiException):
                    name = item["metadata"]["name"]
                    unfinalized = {"metadata": {"finalizers": None}}
                    custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural, name, unfinalized)


class BudgetWatch:
    """Every version of one PrivacyBudget the API server stores, from a resourceVersion on, collected by a thread."""

    def __init__(self, api_client: kubernetes.client.ApiClient, namespace: str, name: str, since: str) -> None:
        self.objects: list[dict[str, Any]] = []
        self._custom = kubernetes.client.CustomObjectsApi(api_client)
        self._args = (GROUP, VERSION, namespace, "privacybudgets")
        self._selector = f"metadata.name={name}"
        self._version = since
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {namespace}/{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            stream = kubernetes.watch.Watch().stream(
                self._custom.list_namespaced_custom_object,
                *self._args,
                field_selector=self._selector,
                resource_version=self._version,
                timeout_seconds=1,
            )
            for event in stream:
                if event["type"] in ("ADDED", "MODIFIED"):
                    self.objects.append(event["object"])
                    self._version = event["object"]["metadata"]["resourceVersion"]

    def stop(self) -> list[dict[str, Any]]:
        """Stop watching; return every version seen, oldest first."""
        self._stopped.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the budget watch did not stop"
        return self.objects


@pytest.fixture
def watch_budget(api_client: kubernetes.client.ApiClient) -> Iterator[Callable[[str, str, str], BudgetWatch]]:
    """``watch_budget(namespace, name, since_resource_version)``: record every version of a budget."""
    watches: list[BudgetWatch] = []

    def start(namespace: str, name: str, since: str) -> BudgetWatch:
        watch = BudgetWatch(api_client, namespace, name, since)
        watches.append(watch)
        return watch

    yield start
    for watch in watches:
        watch.stop()


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

    def health(self) -> dict[str, Any] | None:
        """The health endpoint's report, or None while it does not answer 200."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return json.loads(response.read()) if response.status == 200 else None
        except OSError:  # refused, or reset as the standby's server hands the port to the leader's
            return None

    def healthy(self) -> bool:
        return self.health() is not None

    def logs(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_operator(
    tmp_path: Path, kubeconfig: Path, wait_for: Callable[..., Any], namespace: str
) -> Iterator[Callable[..., Operator]]:
    """``start_operator(namespace, config=..., *args)``: run the operator until the test ends.

    It serves ``namespace``, or all namespaces when that is None (as it does in the cluster), and
    elects its leader with a Lease in ``namespace`` (else ``--lease-namespace`` in ``args``).
    It stops before the test's namespace is torn down.
    """
    running: list[Operator] = []

    def start(namespace: str | None, config: Path = kubeconfig, *args: str) -> Operator:
        port = _free_port()
        log = tmp_path / f"operator-{len(running)}.log"
        scope = [*(["--namespace", namespace] if namespace else []), *args]
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


@pytest.fixture
def operator(start_operator: Callable[..., Operator], namespace: str) -> Operator:
    """The operator, serving the test's namespace, started (and waited on) before the test runs."""
    return start_operator(namespace)
