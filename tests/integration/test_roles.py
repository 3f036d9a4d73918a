"""The roles for people (deploy/15-roles.yaml) grant what each job needs and nothing that would let it rewrite
what a dataset has released: `kubectl auth can-i --as`, answered by the real API server's authorizer."""

import subprocess
from collections.abc import Callable

import kubernetes
import pytest

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
GROUP = "securemodel.io"


@pytest.fixture
def people(api_client: kubernetes.client.ApiClient, namespace: str) -> str:
    """max the ML engineer and dana the data steward, bound in the test's namespace."""
    rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)
    for user, role in (("max", "securemodel-ml-engineer"), ("dana", "securemodel-data-steward")):
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": user}, "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role}})  # fmt: skip
    return namespace


@pytest.mark.parametrize(
    ("user", "verb", "resource", "allowed"),
    [
        ("max", "create", f"securemodels.{GROUP}", "yes"),
        ("max", "delete", f"federatedrounds.{GROUP}", "yes"),
        ("max", "get", f"privacybudgets.{GROUP}", "yes"),
        ("max", "patch", f"privacybudgets.{GROUP}", "no"),
        ("max", "delete", f"privacybudgets.{GROUP}", "no"),
        ("max", "patch", f"securemodels.{GROUP}/status", "no"),
        ("max", "patch", f"privacybudgets.{GROUP}/status", "no"),
        ("max", "get", "secrets/tumor-data-key", "no"),
        ("max", "list", "secrets", "no"),
        ("dana", "create", f"privacybudgets.{GROUP}", "yes"),
        ("dana", "delete", f"privacybudgets.{GROUP}", "yes"),
        ("dana", "allow-delete-with-spend", f"privacybudgets.{GROUP}", "yes"),
        ("max", "allow-delete-with-spend", f"privacybudgets.{GROUP}", "no"),
        ("dana", "patch", f"privacybudgets.{GROUP}/status", "no"),
        ("dana", "create", f"securemodels.{GROUP}", "no"),
        ("dana", "get", "secrets", "no"),
    ],
)
def test_each_role_may_do_what_its_job_needs_and_no_more(
    user: str, verb: str, resource: str, allowed: str, kubectl: Kubectl, people: str
) -> None:
    name, _, subresource = resource.partition("/")
    if name == "secrets" and subresource:  # a Secret by name, not a subresource
        name, subresource = f"secrets/{subresource}", ""
    extra = [f"--subresource={subresource}"] if subresource else []
    result = kubectl("auth", "can-i", verb, name, *extra, "-n", people, f"--as={user}")
    assert result.stdout.strip() == allowed, (user, verb, resource, result.stderr)
