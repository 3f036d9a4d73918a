"""The training stage creates a model's children only once its ε is reserved, once, and a restart duplicates none.

The models name a worker image that does not exist, so no worker pod ever starts: the train
Job stays pending and nothing reads data (the claim stays Reserved).
"""

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import kubernetes

from securemodel.operator import children
from test_budget_operator import apply, budget, claims, get, model

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
NO_IMAGE = {"image": "securemodel-worker:does-not-exist"}


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


def test_children_only_after_the_claim_is_reserved_and_never_twice(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    operator = start_operator(namespace)
    apply(kubectl, namespace, budget("b", 1.0))
    apply(kubectl, namespace, model("first", "b", 1.0, model=NO_IMAGE, serving={"clients": ["frontend"]}))
    wait_for(lambda: condition(get(api_client, namespace, "securemodels", "first"), "BudgetReserved").get("status")
             == "True", what="first's claim reserved")  # fmt: skip
    apply(kubectl, namespace, model("second", "b", 0.5, model=NO_IMAGE))
    first = get(api_client, namespace, "securemodels", "first")
    version = children.Versions.of(first["spec"]).training
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


def test_deleting_a_model_whose_pod_never_started_releases_its_claim(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    start_operator(namespace)
    apply(kubectl, namespace, budget("b", 1.0), model("m", "b", 1.0, model=NO_IMAGE))
    wait_for(lambda: get(api_client, namespace, "securemodels", "m").get("status", {}).get("phase") == "Training",
             what="training")  # fmt: skip
    assert kubectl("delete", "-n", namespace, "securemodel/m", "--timeout=30s").returncode == 0
    assert [c["state"] for c in claims(api_client, namespace, "b")] == ["Released"]


def versions(claimed: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The ledger as (training version, state), in arrival order."""
    return [(c["consumer"].get("version", ""), c["state"]) for c in claimed]


def test_a_new_training_version_claims_anew_and_gives_back_the_claim_it_left(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    start_operator(namespace)
    apply(kubectl, namespace, budget("b", 1.0), model("m", "b", 0.4, model=NO_IMAGE))
    first = children.Versions.of(get(api_client, namespace, "securemodels", "m")["spec"])
    wait_for(lambda: versions(claims(api_client, namespace, "b")) == [(first.training, "Reserved")],
             what="the first version's claim reserved")  # fmt: skip
    uid = get(api_client, namespace, "securemodels", "m")["metadata"]["uid"]
    wait_for(lambda: owned(api_client, namespace, uid)["jobs"] == [f"m-train-{first.training}"], what="first train Job")

    # More epochs: a new training version. Its train pod never started, so the first Job goes and
    # its claim is given back; the new version claims for itself.
    apply(kubectl, namespace, model("m", "b", 0.4, model=NO_IMAGE, training={"epochs": 2}))
    second = children.Versions.of(get(api_client, namespace, "securemodels", "m")["spec"])
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
    assert budget_status["epsilonReserved"] == 0.4 and budget_status["epsilonCommitted"] == 0

    # Deleting the model gives back the new version's claim too: nothing stays held.
    assert kubectl("delete", "-n", namespace, "securemodel/m", "--timeout=30s").returncode == 0
    assert versions(claims(api_client, namespace, "b")) == [(first.training, "Released"), (second.training, "Released")]


def test_a_spec_change_while_waiting_replaces_the_waiting_claim(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    start_operator(namespace)
    apply(kubectl, namespace, budget("b", 1.0), model("holder", "b", 0.8, model=NO_IMAGE))
    wait_for(lambda: [c["state"] for c in claims(api_client, namespace, "b")] == ["Reserved"], what="holder reserved")
    apply(kubectl, namespace, model("w", "b", 0.5, model=NO_IMAGE))
    wait_for(lambda: [c["state"] for c in claims(api_client, namespace, "b")] == ["Reserved", "Waiting"],
             what="w waiting")  # fmt: skip
    first = children.Versions.of(get(api_client, namespace, "securemodels", "w")["spec"])
    apply(kubectl, namespace, model("w", "b", 0.2, model=NO_IMAGE))  # now it fits
    second = children.Versions.of(get(api_client, namespace, "securemodels", "w")["spec"])
    wait_for(lambda: versions(claims(api_client, namespace, "b"))[1:]
             == [(first.training, "Released"), (second.training, "Reserved")], what="w's new claim granted")  # fmt: skip
    wait_for(lambda: condition(get(api_client, namespace, "securemodels", "w"), "BudgetReserved").get("status") == "True",
             what="w reserved")  # fmt: skip
    assert get(api_client, namespace, "privacybudgets", "b")["status"]["epsilonReserved"] == 1.0
