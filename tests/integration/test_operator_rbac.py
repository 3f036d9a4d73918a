"""The ClusterRole in deploy/ is enough for the operator, and no more than it needs.

The operator runs cluster-wide, as in the cluster, authenticated as deploy/'s ServiceAccount
(securemodel-system/securemodel-operator) with deploy/10-rbac.yaml's ClusterRole and leader-election
Role: the identity the admission policy lets write PrivacyBudget ledgers.
"""

import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
SYSTEM = "securemodel-system"
ACCOUNT = "securemodel-operator"
USER = f"system:serviceaccount:{SYSTEM}:{ACCOUNT}"


@pytest.fixture
def operator_kubeconfig(api_client: kubernetes.client.ApiClient, kubeconfig: Path, tmp_path: Path) -> Path:
    """A kubeconfig for deploy/'s ServiceAccount (installed by the session's admission_policy fixture)."""
    token = kubernetes.client.CoreV1Api(api_client).create_namespaced_service_account_token(
        ACCOUNT, SYSTEM, {"spec": {"expirationSeconds": 3600}}
    ).status.token
    admin = yaml.safe_load(kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": ACCOUNT, "context": {"cluster": "cluster", "user": ACCOUNT}}],
        "current-context": ACCOUNT,
    }
    path = tmp_path / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_operator_works_with_the_deployed_cluster_role(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    operator_kubeconfig: Path,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    operator = start_operator(None, operator_kubeconfig, "--lease-namespace", SYSTEM)
    assert kubectl("apply", "-n", namespace, "-f", str(REPO / "examples")).returncode == 0
    custom = kubernetes.client.CustomObjectsApi(api_client)

    def observed(plural: str, name: str) -> bool:
        obj = custom.get_namespaced_custom_object("securemodel.io", "v1alpha1", namespace, plural, name)
        return obj.get("status", {}).get("observedGeneration") == 1

    for plural, name in [
        ("privacybudgets", "breast-cancer"),
        ("securemodels", "tumor-classifier"),
        ("federatedrounds", "tumor-classifier-round-1"),
    ]:
        wait_for(partial(observed, plural, name), what=f"{plural}/{name} reconciled")
    core = kubernetes.client.CoreV1Api(api_client)
    wait_for(lambda: len(core.list_namespaced_event(namespace).items) >= 3, what="three Events")
    logs = operator.logs()
    assert "Not enough permissions" not in logs
    assert f'User "{USER}" cannot' not in logs
    assert "denied request" not in logs  # the admission policies let the operator write its ledgers


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "securemodels.securemodel.io", "yes"),
        ("patch", "privacybudgets.securemodel.io/status", "yes"),
        ("create", "events", "yes"),
        ("delete", "securemodels.securemodel.io", "no"),
        ("create", "privacybudgets.securemodel.io", "no"),
        ("update", "privacybudgets.securemodel.io", "no"),
        ("get", "secrets", "yes"),  # to grant the ML engineer get on its client Secrets; list shows as much
        ("watch", "pods", "yes"),
        ("patch", "jobs.batch", "yes"),
        ("create", "pods", "no"),
        ("list", "namespaces", "no"),
        ("create", "customresourcedefinitions.apiextensions.k8s.io", "no"),
    ],
)
def test_the_cluster_role_grants_only_what_the_operator_uses(
    verb: str, resource: str, allowed: str, kubectl: Kubectl, namespace: str
) -> None:
    name, _, subresource = resource.partition("/")
    extra = [f"--subresource={subresource}"] if subresource else []
    result = kubectl(
        "auth", "can-i", verb, name, *extra, "-n", namespace, f"--as={USER}"
    )
    assert result.stdout.strip() == allowed, (verb, resource, result.stderr)
