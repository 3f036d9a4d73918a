"""Nobody rewrites a PrivacyBudget's ledger or deletes it with spend: the API server's admission policies.

Each tamper attempt is made as a person would make it, with kubectl, against the real API server:
a cluster-admin (``alice``, impersonated in ``system:masters``) who is not the operator, the ledger
writer itself (the operator's identity: these tests' admin, see conftest), a namespace user who may
edit budgets but is no data steward, and a data steward.
"""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from ledger_support import commit_claim, release_claim, submit_claim
from securemodel.api import GROUP, VERSION
from securemodel.operator.budget.ledger import BudgetRef
from securemodel.privacy import BudgetSpec, Consumer, Ledger
from securemodel.privacy.compaction import compact
from securemodel.privacy.status import status_fields

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
ADMIN_ALICE = ["--as=alice", "--as-group=system:masters"]
OVERRIDE = "securemodel.io/allow-delete-with-spend"


def create_budget(kubectl: Kubectl, namespace: str, name: str) -> None:
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "PrivacyBudget", "metadata": {"name": name},
                "spec": {"epsilon": 10.0, "delta": 1e-5, "data": {"sources": [f"pvc://{name}/"]}}}  # fmt: skip
    result = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
    assert result.returncode == 0, result.stderr


def spent_budget(api_client: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str, name: str) -> BudgetRef:
    """A budget whose sealed ledger holds a Committed claim and a Reserved one."""
    create_budget(kubectl, namespace, name)
    ref = BudgetRef(namespace, name)
    submit_claim(api_client, ref, Consumer("SecureModel", namespace, "a", "uid-a"), 2.0, 1e-6)
    commit_claim(api_client, ref, "uid-a", 2.0)
    submit_claim(api_client, ref, Consumer("SecureModel", namespace, "b", "uid-b"), 1.0, 1e-6)
    return ref


def ledger(api_client: kubernetes.client.ApiClient, ref: BudgetRef) -> list[dict[str, Any]]:
    custom = kubernetes.client.CustomObjectsApi(api_client)
    return custom.get_namespaced_custom_object(GROUP, VERSION, ref.namespace, "privacybudgets", ref.name)["status"]["claims"]


def patch_status(kubectl: Kubectl, ref: BudgetRef, patch: list[dict[str, Any]], *who: str) -> subprocess.CompletedProcess[str]:
    return kubectl("patch", "-n", ref.namespace, "privacybudget", ref.name, "--subresource=status", "--type=json",
                   "-p", json.dumps(patch), *who)  # fmt: skip


def test_a_cluster_admin_cannot_remove_a_claim(api_client: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str) -> None:
    ref = spent_budget(api_client, kubectl, namespace, "wine")
    before = ledger(api_client, ref)
    result = patch_status(kubectl, ref, [{"op": "remove", "path": "/status/claims/0"}], *ADMIN_ALICE)
    assert result.returncode != 0
    assert "privacybudget-ledger.securemodel.io" in result.stderr
    assert "only the securemodel operator" in result.stderr and "alice may not" in result.stderr
    # Nor may she rewrite the totals or the head.
    result = patch_status(kubectl, ref, [{"op": "replace", "path": "/status/epsilonCommitted", "value": 0}], *ADMIN_ALICE)
    assert result.returncode != 0 and "only the securemodel operator" in result.stderr
    assert ledger(api_client, ref) == before


@pytest.mark.parametrize(
    ("patch", "refusal"),
    [
        ([{"op": "remove", "path": "/status/claims/0"}], "a ledger entry may not be removed"),
        ([{"op": "replace", "path": "/status/claims/0/epsilon", "value": 0.1}], "is final and may not be changed"),
        ([{"op": "replace", "path": "/status/claims/0/state", "value": "Released"}], "is final and may not be changed"),
        ([{"op": "replace", "path": "/status/claims/1/state", "value": "Waiting"}], "may only move forward"),
    ],
    ids=["remove", "lower-committed", "release-committed", "reserved-back-to-waiting"],
)
def test_even_the_ledger_writer_only_moves_the_ledger_forward(
    patch: list[dict[str, Any]], refusal: str, api_client: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    ref = spent_budget(api_client, kubectl, namespace, "wine")
    before = ledger(api_client, ref)
    result = patch_status(kubectl, ref, patch)  # as the admin, whom these tests let write ledgers
    assert result.returncode != 0 and refusal in result.stderr, result.stderr
    assert ledger(api_client, ref) == before


def test_a_budget_with_spend_is_deleted_only_after_a_data_steward_says_so(
    api_client: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    ref = spent_budget(api_client, kubectl, namespace, "wine")
    reserved_only = BudgetRef(namespace, "iris")
    create_budget(kubectl, namespace, reserved_only.name)
    submit_claim(api_client, reserved_only, Consumer("SecureModel", namespace, "c", "uid-c"), 1.0, 1e-6)
    for name in (ref.name, reserved_only.name):
        refused = kubectl("delete", "-n", namespace, "pbudget", name, "--wait=false", *ADMIN_ALICE)
        assert refused.returncode != 0 and "holds spent privacy" in refused.stderr, refused.stderr
    refused = kubectl("delete", "-n", namespace, "pbudget", "--all", "--wait=false")
    assert refused.returncode != 0 and "holds spent privacy" in refused.stderr

    # Bob may edit budgets but is no data steward: he may not set the override.
    rbac = kubernetes.client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "budget-editor"}, "rules": [
        {"apiGroups": [GROUP], "resources": ["privacybudgets"], "verbs": ["get", "list", "patch", "update", "delete"]}]})  # fmt: skip
    for user, role in (("bob", ("Role", "budget-editor")), ("carol", ("ClusterRole", "securemodel-data-steward"))):
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": user}, "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role[0], "name": role[1]}})  # fmt: skip
    annotate = ["annotate", "-n", namespace, "pbudget", ref.name, f"{OVERRIDE}=true"]
    by_bob = kubectl(*annotate, "--as=bob")
    assert by_bob.returncode != 0 and "only a data steward may set" in by_bob.stderr, by_bob.stderr
    assert kubectl("delete", "-n", namespace, "pbudget", ref.name, "--wait=false", "--as=bob").returncode != 0

    # Carol, the data steward, may; then the budget (and its ledger) can go.
    by_carol = kubectl(*annotate, "--as=carol")
    assert by_carol.returncode == 0, by_carol.stderr
    deleted = kubectl("delete", "-n", namespace, "pbudget", ref.name, "--timeout=30s", timeout=60)
    assert deleted.returncode == 0, deleted.stderr


def test_a_compacted_budget_is_deleted_without_the_override_only_if_its_record_holds_no_committed_claim(
    api_client: kubernetes.client.ApiClient, kubectl: Kubectl, namespace: str
) -> None:
    """Compaction folds Released claims as well as Committed ones: a record of nothing but Released claims holds no
    spend, and the budget can go; one that folded a Committed claim holds its spend, and it cannot."""
    custom = kubernetes.client.CustomObjectsApi(api_client)
    for name, spent in (("released", False), ("committed", True)):
        create_budget(kubectl, namespace, name)
        ref = BudgetRef(namespace, name)
        submit_claim(api_client, ref, Consumer("SecureModel", namespace, "a", "uid-a"), 1.0, 1e-6)
        if spent:
            commit_claim(api_client, ref, "uid-a", 1.0)
        else:
            release_claim(api_client, ref, "uid-a")
        budget = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "privacybudgets", name)
        folded = compact(Ledger.from_status(budget["status"]), keep=0)
        status = status_fields(folded, BudgetSpec.from_dict(budget["spec"]))
        written = kubectl("patch", "-n", namespace, "privacybudget", name, "--subresource=status", "--type=merge",
                          "-p", json.dumps({"status": status}))  # fmt: skip
        assert written.returncode == 0, written.stderr
        stored = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "privacybudgets", name)["status"]
        assert stored["compacted"]["entries"] == 1 and not stored.get("claims")
    refused = kubectl("delete", "-n", namespace, "pbudget", "committed", "--wait=false", *ADMIN_ALICE)
    assert refused.returncode != 0 and "holds spent privacy" in refused.stderr, refused.stderr
    deleted = kubectl("delete", "-n", namespace, "pbudget", "released", "--timeout=30s", *ADMIN_ALICE, timeout=60)
    assert deleted.returncode == 0, deleted.stderr


def test_a_ledger_of_a_thousand_entries_is_checked_within_the_api_servers_cost_limits(
    kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """The transition rules match entries by key (maps), so checking n entries costs O(n): a ledger as large as
    the operator lets one grow before compacting it (1000 entries and a batch) is still writable."""
    create_budget(kubectl, namespace, "large")
    ref = BudgetRef(namespace, "large")
    claims = [{"consumer": {"kind": "SecureModel", "namespace": namespace, "name": f"m{i}", "uid": f"uid-{i}", "version": "v1"},
               "epsilon": 0.01, "delta": 1e-9, "state": "Committed", "updated": "2026-11-27T00:00:00Z",
               "mechanism": {"type": "DPSGD", "noiseMultiplier": 1.1, "sampleRate": 0.01, "steps": 100}}
              for i in range(1100)]  # fmt: skip
    large = tmp_path / "ledger.json"
    large.write_text(json.dumps({"status": {"claims": claims}}))
    written = kubectl("patch", "-n", namespace, "privacybudget", "large", "--subresource=status", "--type=merge",
                      "--patch-file", str(large), timeout=120)  # fmt: skip
    assert written.returncode == 0, written.stderr
    appended = {"consumer": {"kind": "SecureModel", "namespace": namespace, "name": "new", "uid": "uid-new"},
                "epsilon": 1.0, "delta": 1e-6, "state": "Waiting", "updated": "2026-11-27T00:00:00Z"}  # fmt: skip
    result = patch_status(kubectl, ref, [{"op": "add", "path": "/status/claims/-", "value": appended}])
    assert result.returncode == 0, result.stderr
    result = patch_status(kubectl, ref, [{"op": "remove", "path": "/status/claims/500"}])
    assert result.returncode != 0 and "may not be removed" in result.stderr
