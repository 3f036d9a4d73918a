"""The training stage creates a model's children only once its ε is reserved, once, and a restart duplicates none.

The models ask for a GPU the node does not have, so no worker pod is ever scheduled: the train
Job stays pending and nothing reads data (the claim stays Reserved).
"""

import json
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from securemodel.operator.secure_model import children
from securemodel.operator.secure_model.spec import parse
from test_budget_operator import apply, budget, claims, get, model

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
PENDING = {"gpus": 1}


def owned(api_client: kubernetes.client.ApiClient, namespace: str, uid: str) -> dict[str, list[str]]:
    """Names of the children carrying the model's uid label, by kind."""
    core, batch, apps = (kubernetes.client.CoreV1Api(api_client), kubernetes.client.BatchV1Api(api_client),
                         kubernetes.client.AppsV1Api(api_client))  # fmt: skip
    selector = f"{children.UID_LABEL}={uid}"
    listings = {
        "jobs": batch.list_namespaced_job(namespace, label_selector=selector),
        "secrets": core.list_namespaced_secret(namespace, label_selector=selector),
        "pvcs": core.list_namespaced_persistent_volume_claim(namespace, label_selector=selector),
        "deployments": apps.list_namespaced_deployment(namespace, label_selector=selector),
        "services": core.list_namespaced_service(namespace, label_selector=selector),
    }
    return {kind: sorted(item.metadata.name for item in listed.items) for kind, listed in listings.items()}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


def model_state(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> tuple[str, str, str] | None:
    """A SecureModel's phase, Ready reason and Stalled status, once its status is of its current generation."""
    obj = get(api_client, namespace, "securemodels", name)
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    return status.get("phase"), condition(obj, "Ready").get("reason", ""), condition(obj, "Stalled").get("status", "")


def test_children_only_after_the_claim_is_reserved_and_never_twice(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    operator = start_operator(namespace)
    apply(kubectl, namespace, budget("b", 1.0))
    apply(kubectl, namespace, model("first", "b", 1.0, resources=PENDING, serving={"clients": ["frontend"]}))
    wait_for(lambda: condition(get(api_client, namespace, "securemodels", "first"), "BudgetReserved").get("status")
             == "True", what="first's claim reserved")  # fmt: skip
    apply(kubectl, namespace, model("second", "b", 0.5, resources=PENDING))
    first = get(api_client, namespace, "securemodels", "first")
    version = parse(first["spec"]).versions.training
    expected = {
        "jobs": [f"first-train-{version}"],
        "secrets": ["first-ca", "first-client-frontend", "first-data-key", "first-tls"],
        "pvcs": ["first-artifacts"],
        "deployments": [],
        "services": [],
    }
    uid = first["metadata"]["uid"]
    wait_for(lambda: owned(api_client, namespace, uid) == expected, what="first's children")
    wait_for(lambda: get(api_client, namespace, "securemodels", "first")["status"].get("phase") == "Training",
             what="first training")  # fmt: skip
    second = get(api_client, namespace, "securemodels", "second")
    wait_for(lambda: condition(get(api_client, namespace, "securemodels", "second"), "BudgetReserved").get("reason")
             == "Waiting", what="second waiting")  # fmt: skip
    assert owned(api_client, namespace, second["metadata"]["uid"]) == {kind: [] for kind in expected}

    batch = kubernetes.client.BatchV1Api(api_client)
    job = batch.read_namespaced_job(expected["jobs"][0], namespace)
    assert job.spec.backoff_limit == 0
    status_before = get(api_client, namespace, "securemodels", "first")["status"]
    for _ in range(2):  # restart the operator twice: nothing is created again, nothing is lost
        operator.process.send_signal(signal.SIGTERM)
        operator.process.wait(timeout=30)
        operator = start_operator(namespace)
        time.sleep(3)
        assert owned(api_client, namespace, uid) == expected
        assert batch.read_namespaced_job(expected["jobs"][0], namespace).metadata.uid == job.metadata.uid
    status_after = get(api_client, namespace, "securemodels", "first")["status"]
    assert status_after["phase"] == status_before["phase"] == "Training"
    assert status_after["privacy"] == status_before["privacy"]
    assert [c["state"] for c in claims(api_client, namespace, "b")] == ["Reserved", "Waiting"]
    assert "Traceback" not in operator.logs()


@pytest.mark.usefixtures("operator")
def test_deleting_a_model_whose_pod_never_started_releases_its_claim(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    apply(kubectl, namespace, budget("b", 1.0), model("m", "b", 1.0, resources=PENDING))
    wait_for(lambda: get(api_client, namespace, "securemodels", "m").get("status", {}).get("phase") == "Training",
             what="training")  # fmt: skip
    assert kubectl("delete", "-n", namespace, "securemodel/m", "--timeout=30s").returncode == 0
    assert [c["state"] for c in claims(api_client, namespace, "b")] == ["Released"]


def managers(kubectl: Kubectl, namespace: str, what: str, *selector: str) -> dict[str, set[tuple[str, str]]]:
    """Each object's field managers as (manager, subresource), from ``kubectl get --show-managed-fields``."""
    result = kubectl("get", "-n", namespace, what, *selector, "-o", "json", "--show-managed-fields")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    return {f"{obj['kind']}/{obj['metadata']['name']}": {(entry["manager"], entry.get("subresource", ""))
                                                        for entry in obj["metadata"].get("managedFields") or ()}
            for obj in listed.get("items", [listed])}  # fmt: skip


@pytest.mark.usefixtures("operator")
def test_every_write_of_the_operator_is_recorded_under_its_own_field_manager(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    """`kubectl get --show-managed-fields` names the operator for what it wrote: the model's and the budget's
    status and every child; the only other writers are the test's kubectl, kopf's finalizer and Kubernetes' own
    controllers."""
    apply(kubectl, namespace, budget("b", 1.0), model("m", "b", 1.0, resources=PENDING, serving={"clients": ["web"]}))
    wait_for(lambda: get(api_client, namespace, "securemodels", "m").get("status", {}).get("phase") == "Training",
             what="training")  # fmt: skip
    uid = get(api_client, namespace, "securemodels", "m")["metadata"]["uid"]
    found = {**managers(kubectl, namespace, "securemodel/m"), **managers(kubectl, namespace, "privacybudget/b")}
    for kinds in ("jobs", "secrets", "persistentvolumeclaims", "networkpolicies"):
        found |= managers(kubectl, namespace, kinds, "-l", f"{children.UID_LABEL}={uid}")
    operator = "securemodel-operator"
    assert (operator, "status") in found["SecureModel/m"]
    assert (operator, "status") in found["PrivacyBudget/b"]
    children_found = [name for name in found if name.split("/")[0] not in ("SecureModel", "PrivacyBudget")]
    assert {"Job/m-train-" + parse(get(api_client, namespace, "securemodels", "m")["spec"]).versions.training,
            "Secret/m-data-key", "Secret/m-client-web", "PersistentVolumeClaim/m-artifacts"} <= set(children_found)
    for name in children_found:
        assert any(manager == operator for manager, _ in found[name]), (name, found[name])
    others = {(name, manager) for name, entries in found.items() for manager, _ in entries
              if manager not in (operator, "kopf", "kubectl-client-side-apply") and not manager.startswith("kube-")}
    assert not others, others


def versions(claimed: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The ledger as (training version, state), in arrival order."""
    return [(c["consumer"].get("version", ""), c["state"]) for c in claimed]


@pytest.mark.usefixtures("operator")
def test_a_new_training_version_claims_anew_and_gives_back_the_claim_it_left(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    apply(kubectl, namespace, budget("b", 1.0), model("m", "b", 0.4, resources=PENDING))
    first = parse(get(api_client, namespace, "securemodels", "m")["spec"]).versions
    wait_for(lambda: versions(claims(api_client, namespace, "b")) == [(first.training, "Reserved")],
             what="the first version's claim reserved")  # fmt: skip
    uid = get(api_client, namespace, "securemodels", "m")["metadata"]["uid"]
    wait_for(lambda: owned(api_client, namespace, uid)["jobs"] == [f"m-train-{first.training}"], what="first train Job")

    # More epochs: a new training version. Its train pod never started, so the first Job goes and
    # its claim is given back; the new version claims for itself.
    apply(kubectl, namespace, model("m", "b", 0.4, resources=PENDING, training={"epochs": 2}))
    second = parse(get(api_client, namespace, "securemodels", "m")["spec"]).versions
    assert second.training != first.training
    wait_for(lambda: versions(claims(api_client, namespace, "b"))
             == [(first.training, "Released"), (second.training, "Reserved")], what="a claim per version")  # fmt: skip
    wait_for(lambda: owned(api_client, namespace, uid)["jobs"] == [f"m-train-{second.training}"],
             what="only the new version's train Job")  # fmt: skip
    wait_for(lambda: get(api_client, namespace, "securemodels", "m")["status"].get("phase") == "Training",
             what="the new version training")  # fmt: skip
    status = get(api_client, namespace, "securemodels", "m")["status"]
    assert status["version"] == second.version and "servingVersion" not in status
    assert status["privacy"]["epsilonClaimed"] == 0.4 and "epsilonSpent" not in status["privacy"]
    budget_status = get(api_client, namespace, "privacybudgets", "b")["status"]
    assert budget_status["epsilonReserved"] == pytest.approx(0.4, rel=1e-3) and budget_status["epsilonCommitted"] == 0

    # Deleting the model gives back the new version's claim too: nothing stays held.
    assert kubectl("delete", "-n", namespace, "securemodel/m", "--timeout=30s").returncode == 0
    assert versions(claims(api_client, namespace, "b")) == [(first.training, "Released"), (second.training, "Released")]


@pytest.mark.usefixtures("operator")
def test_a_spec_change_while_waiting_replaces_the_waiting_claim(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    apply(kubectl, namespace, budget("b", 1.0), model("holder", "b", 0.8, resources=PENDING))
    wait_for(lambda: [c["state"] for c in claims(api_client, namespace, "b")] == ["Reserved"], what="holder reserved")
    apply(kubectl, namespace, model("w", "b", 0.95, resources=PENDING))  # composed with 0.8: above 1
    wait_for(lambda: [c["state"] for c in claims(api_client, namespace, "b")] == ["Reserved", "Waiting"],
             what="w waiting")  # fmt: skip
    first = parse(get(api_client, namespace, "securemodels", "w")["spec"]).versions
    apply(kubectl, namespace, model("w", "b", 0.2, resources=PENDING))  # now it fits
    second = parse(get(api_client, namespace, "securemodels", "w")["spec"]).versions
    wait_for(lambda: versions(claims(api_client, namespace, "b"))[1:]
             == [(first.training, "Released"), (second.training, "Reserved")], what="w's new claim granted")  # fmt: skip
    wait_for(lambda: condition(get(api_client, namespace, "securemodels", "w"), "BudgetReserved").get("status") == "True",
             what="w reserved")  # fmt: skip
    assert get(api_client, namespace, "privacybudgets", "b")["status"]["epsilonSummed"] == 1.0


@pytest.mark.usefixtures("operator")
def test_deleted_secrets_and_volume_and_a_forged_status_are_undone_by_the_next_pass(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    apply(kubectl, namespace, budget("b", 1.0), model("m", "b", 0.5, resources=PENDING, serving={"clients": ["frontend"]}))
    uid = get(api_client, namespace, "securemodels", "m")["metadata"]["uid"]
    version = parse(get(api_client, namespace, "securemodels", "m")["spec"]).versions.training
    wait_for(lambda: owned(api_client, namespace, uid)["jobs"] == [f"m-train-{version}"], what="the train Job")
    job = kubernetes.client.BatchV1Api(api_client).read_namespaced_job(f"m-train-{version}", namespace)
    command = job.spec.template.spec.containers[0].command
    ledger_before = claims(api_client, namespace, "b")

    # Whoever may patch securemodels/status cannot lower the noise: nothing is read back from it.
    forged = {"status": {"privacy": {"noiseMultiplier": 0.001, "steps": 1, "epsilonSpent": 0.0}}}
    assert kubectl("patch", "-n", namespace, "securemodel/m", "--subresource=status", "--type=merge",
                   "-p", json.dumps(forged)).returncode == 0  # fmt: skip
    wait_for(lambda: get(api_client, namespace, "securemodels", "m")["status"]["privacy"].get("noiseMultiplier", 0) > 0.01, timeout=60,
             what="the operator's calibration back in status")  # fmt: skip
    job_after = kubernetes.client.BatchV1Api(api_client).read_namespaced_job(f"m-train-{version}", namespace)
    assert job_after.metadata.uid == job.metadata.uid and job_after.spec.template.spec.containers[0].command == command
    assert claims(api_client, namespace, "b") == ledger_before

    core = kubernetes.client.CoreV1Api(api_client)
    before = {name: core.read_namespaced_secret(name, namespace).metadata.uid for name in ("m-client-frontend", "m-tls")}
    for name in before:
        core.delete_namespaced_secret(name, namespace)
    core.delete_namespaced_persistent_volume_claim("m-artifacts", namespace)
    wait_for(lambda: all(name in owned(api_client, namespace, uid)["secrets"] for name in before)
             and owned(api_client, namespace, uid)["pvcs"] == ["m-artifacts"]
             and all(core.read_namespaced_secret(n, namespace).metadata.uid != u for n, u in before.items())
             and core.read_namespaced_persistent_volume_claim("m-artifacts", namespace).metadata.deletion_timestamp is None,
             what="the Secrets and the volume restored", timeout=90)  # fmt: skip


def test_a_secret_of_the_models_name_that_it_does_not_own_is_reported_not_adopted(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    core = kubernetes.client.CoreV1Api(api_client)
    core.create_namespaced_secret(namespace, {"metadata": {"name": "m-ca"}, "stringData": {"mine": "yes"}})
    start_operator(namespace)
    apply(kubectl, namespace, budget("b", 1.0), model("m", "b", 0.5, resources=PENDING))
    wait_for(lambda: condition(get(api_client, namespace, "securemodels", "m"), "Ready").get("reason") == "SecretConflict",
             what="the conflict reported")  # fmt: skip
    ready = condition(get(api_client, namespace, "securemodels", "m"), "Ready")
    assert "m-ca" in ready["message"]
    assert condition(get(api_client, namespace, "securemodels", "m"), "Stalled").get("status") == "True"
    stored = core.read_namespaced_secret("m-ca", namespace)
    assert stored.data == {"mine": "eWVz"} and not stored.metadata.owner_references
