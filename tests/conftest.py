"""Fixtures shared by the integration and end-to-end tests: the real cluster, nothing mocked.

The cluster is the one ``make cluster`` starts; its admin kubeconfig is ``.cluster/kubeconfig``
(override with ``SECUREMODEL_KUBECONFIG``). ``kubectl`` is ``$KUBECTL``, else the cluster's
``.cluster/bin/kubectl``, else the one on PATH.
"""

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from polling import wait_until

REPO = Path(__file__).resolve().parents[1]

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """``wait_for(check, timeout=30, what="...")``: poll until ``check()`` is truthy and return it."""
    return wait_until


@pytest.fixture(scope="session")
def kubeconfig() -> Path:
    """Path of the local cluster's admin kubeconfig."""
    path = Path(os.environ.get("SECUREMODEL_KUBECONFIG", REPO / ".cluster" / "kubeconfig"))
    if not path.is_file():
        pytest.fail(f"no cluster: {path} does not exist (run `make cluster`)")
    return path


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[kubernetes.client.ApiClient]:
    """A Kubernetes API client authenticated as the cluster admin."""
    client = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> Kubectl:
    """Run kubectl against the cluster: ``kubectl("get", "pods", "-n", ns)``; never raises on failure."""
    local = REPO / ".cluster" / "bin" / "kubectl"
    binary = os.environ.get("KUBECTL") or (str(local) if local.is_file() else shutil.which("kubectl"))
    if not binary:
        pytest.fail("kubectl not found: run `make cluster`, or set KUBECTL")

    def run(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [binary, f"--kubeconfig={kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run


def pytest_configure(config: pytest.Config) -> None:
    # Registered here rather than in pyproject.toml, whose hash keys the cached virtual environment and images.
    config.addinivalue_line("markers", "slow: a unit test of whole local Flower rounds, run first (see _run_order)")


def _xdist_scope(nodeid: str) -> str:
    """The unit of work of ``make test``'s two pytest-xdist workers: the integration and end-to-end tests share one
    cluster and one deployed operator, so they are one unit that one worker runs in order; each unit-test module
    is a unit of its own, run beside them by the other worker."""
    path = nodeid.split("::", 1)[0]
    return "cluster" if path.startswith(("tests/integration/", "tests/e2e/")) else path


def _run_order(item: pytest.Item) -> int:
    """The rank of ``item`` in ``make test``'s order: integration tests, end-to-end tests, slow unit tests, the
    other unit tests (each group keeps its own order)."""
    path = item.nodeid.split("::", 1)[0]
    if path.startswith("tests/integration/"):
        return 0
    if path.startswith("tests/e2e/"):
        return 1
    return 2 if item.get_closest_marker("slow") else 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the tests in :func:`_run_order`, which ``make test``'s scheduler keeps (see below).

    The unit worker's slow tests (whole Flower rounds of local processes) take most of the two cores while they
    run. First in its queue, they overlap the integration tests (the API server and operator processes, no
    pods) and are done before the end-to-end pods train, serve and federate.
    """
    items.sort(key=_run_order)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with :func:`_xdist_scope` as the scope (xdist's ``loadgroup`` marks cannot do it:
    xdist 3.8 renames node ids in a way pytest 9.2 ignores)."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    # Hand the scopes out in the collection's order (:func:`pytest_collection_modifyitems`), not largest first.
    config.option.loadscopereorder = False

    class ClusterTestsInOneScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _xdist_scope(nodeid)

    return ClusterTestsInOneScope(config, log)


def _create_namespace(api: kubernetes.client.CoreV1Api, hint: str) -> str:
    prefix = re.sub(r"[^a-z0-9-]+", "-", hint.lower()).strip("-")[:40].rstrip("-")
    body = {"metadata": {"generateName": f"t-{prefix}-", "labels": {"securemodel.io/test": "true"}}}
    return api.create_namespace(body).metadata.name


def _delete_namespace(api_client: kubernetes.client.ApiClient, name: str) -> None:
    """Delete a test namespace. Its PrivacyBudgets are first annotated with the deletion override, as a data
    steward would (the admin holds the verb): the admission policy refuses to delete a budget with spend."""
    custom = kubernetes.client.CustomObjectsApi(api_client)
    override = {"metadata": {"annotations": {"securemodel.io/allow-delete-with-spend": "true"}}}
    with contextlib.suppress(kubernetes.client.ApiException):  # the CRDs may not be installed
        for budget in custom.list_namespaced_custom_object("securemodel.io", "v1alpha1", name, "privacybudgets")["items"]:
            with contextlib.suppress(kubernetes.client.ApiException):
                custom.patch_namespaced_custom_object("securemodel.io", "v1alpha1", name, "privacybudgets",
                                                      budget["metadata"]["name"], override)  # fmt: skip
    kubernetes.client.CoreV1Api(api_client).delete_namespace(name)


@pytest.fixture
def namespace(api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A throwaway namespace for one test, deleted (with everything in it) afterwards."""
    api = kubernetes.client.CoreV1Api(api_client)
    name = _create_namespace(api, request.node.name)
    yield name
    _delete_namespace(api_client, name)


@pytest.fixture(scope="module")
def module_namespace(api_client: kubernetes.client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A throwaway namespace shared by the tests of one module."""
    api = kubernetes.client.CoreV1Api(api_client)
    name = _create_namespace(api, request.module.__name__.rsplit(".", 1)[-1])
    yield name
    _delete_namespace(api_client, name)
