"""What the ledger charges, on the real cluster, whatever happens to the train Job or what its pod says.

Each path of the settlement rule (securemodel.operator.secure_model.settlement): the train pod
or Job deleted after success while the operator was down, an evicted pod, an image that cannot
be pulled (released: no container ran), and a custom image that writes a forged report and
exits 0 (the whole claim committed). Models here serve nothing (replicas 0) and train briefly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from e2e_support import OPERATOR, OPERATOR_DEPLOYMENT, condition, get, restricted_namespace, wait_until
from test_cluster import KUBECONFIG, WORKER_IMAGE, apply, kubectl
from test_secure_model import SPEC

pytestmark = pytest.mark.e2e

BUDGET = "settle"
EPSILON = 0.5


def model(name: str, **parts: Any) -> dict[str, Any]:
    spec = {**SPEC, "privacy": {**SPEC["privacy"], "budgetRef": BUDGET, "epsilon": EPSILON},
            "training": {**SPEC["training"], "epochs": 2}, "serving": {"replicas": 0}}  # fmt: skip
    for section, values in parts.items():
        spec[section] = {**spec.get(section, {}), **values}
    return {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def namespace(operator: None) -> Iterator[str]:
    with restricted_namespace("e2e-settle", deletion_timeout="120s") as name:
        budget = {"apiVersion": "securemodel.io/v1alpha1", "kind": "PrivacyBudget", "metadata": {"name": BUDGET},
                  "spec": {"epsilon": 50.0, "delta": 1.0e-5, "data": {"sources": [SPEC["data"]["source"]]},
                           # The data steward trusts the forger's and a missing image's code to read the data.
                           "allowedImages": [WORKER_IMAGE, "securemodel-forger:test", "securemodel-worker:absent"]}}  # fmt: skip
        apply(name, budget)
        yield name


@pytest.fixture(scope="module")
def core() -> Iterator[kubernetes.client.CoreV1Api]:
    client = kubernetes.config.new_client_from_config(config_file=str(KUBECONFIG))
    yield kubernetes.client.CoreV1Api(client)
    client.close()


def claim_of(namespace: str, uid: str) -> dict[str, Any] | None:
    claims = get(namespace, "privacybudget", BUDGET).get("status", {}).get("claims", [])
    return next((c for c in claims if c["consumer"]["uid"] == uid), None)


def settled(namespace: str, uid: str, state: str, timeout: float = 300) -> dict[str, Any]:
    return wait_until(lambda: (lambda c: c if c and c["state"] == state else None)(claim_of(namespace, uid)),
                      timeout, f"the claim {state}")  # fmt: skip


def train_pods(namespace: str, uid: str) -> list[dict[str, Any]]:
    return json.loads(kubectl("-n", namespace, "get", "pods", "-l",
                              f"securemodel.io/model-uid={uid},securemodel.io/component=train", "-o", "json").stdout)["items"]  # fmt: skip


def train_jobs(namespace: str, uid: str) -> list[dict[str, Any]]:
    return json.loads(kubectl("-n", namespace, "get", "jobs", "-l",
                              f"securemodel.io/model-uid={uid},securemodel.io/component=train", "-o", "json").stdout)["items"]  # fmt: skip


def running(namespace: str, uid: str) -> bool:
    return any((s.get("state") or {}).get("running") for p in train_pods(namespace, uid)
               for s in p["status"].get("containerStatuses", []))  # fmt: skip


def test_a_custom_image_that_forges_its_report_is_charged_the_whole_claim(namespace: str) -> None:
    apply(namespace, model("forged", model={"image": "securemodel-forger:test"}))
    uid = get(namespace, "securemodel", "forged")["metadata"]["uid"]
    claim = settled(namespace, uid, "Committed")
    assert claim["epsilon"] == EPSILON, "a report the user's code wrote lowered the charge"
    # The model's status shows the commit on the operator's next pass after the ledger's.
    privacy = wait_until(lambda: (lambda p: p if "epsilonSpent" in p else None)(
        (get(namespace, "securemodel", "forged").get("status") or {}).get("privacy") or {}), 120, "the spend in status")
    assert privacy["noiseMultiplier"] != 1000.0 and privacy["epsilonSpent"] == EPSILON


def test_an_image_that_cannot_be_pulled_is_released_and_its_job_goes(namespace: str) -> None:
    apply(namespace, model("unpullable", model={"image": "securemodel-worker:absent"}))
    uid = get(namespace, "securemodel", "unpullable")["metadata"]["uid"]
    claim = settled(namespace, uid, "Released")
    assert claim["dispatched"] and "started" not in claim
    wait_until(lambda: not train_jobs(namespace, uid) and not train_pods(namespace, uid), 120, "the Job and its pods gone")
    failed = get(namespace, "securemodel", "unpullable")
    assert failed["status"]["phase"] == "Failed" and condition(failed, "Stalled")["status"] == "True"


def test_an_evicted_train_pod_commits_the_whole_claim(namespace: str, core: kubernetes.client.CoreV1Api) -> None:
    apply(namespace, model("evicted", training={"epochs": 200}))
    uid = get(namespace, "securemodel", "evicted")["metadata"]["uid"]
    wait_until(lambda: running(namespace, uid), 240, "the train container running")
    (pod,) = train_pods(namespace, uid)
    name = pod["metadata"]["name"]
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name, "namespace": namespace}}
    core.create_namespaced_pod_eviction(name, namespace, eviction)
    claim = settled(namespace, uid, "Committed")
    assert claim["epsilon"] == EPSILON and claim["started"]
    wait_until(lambda: not train_pods(namespace, uid), 120, "the evicted pod let go")
    assert condition(get(namespace, "securemodel", "evicted"), "Trained")["reason"] == "TrainingFailed"


def scale_operator(replicas: int) -> None:
    kubectl(*OPERATOR, "scale", OPERATOR_DEPLOYMENT, f"--replicas={replicas}")
    if replicas == 0:
        kubectl(*OPERATOR, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=securemodel-operator",
                "--timeout=120s", check=False)  # fmt: skip
    else:
        kubectl(*OPERATOR, "rollout", "status", OPERATOR_DEPLOYMENT, "--timeout=180s")


def test_a_pod_or_job_deleted_after_success_while_the_operator_was_down_is_charged_and_never_retrained(
    namespace: str,
) -> None:
    # Long enough (about half a minute here: a wide network, 15 epochs) to stop the operator while both train (it
    # was down 7 s after both ran), and half a core each so both fit the node at once.
    wide, long, half = {"architecture": "mlp", "params": {"hidden": [1024, 1024]}}, {"epochs": 15}, {"cpu": "500m"}
    apply(namespace, *(model(name, model=wide, training=long, resources=half) for name in ("pod-deleted", "job-deleted")))
    uids = {name: get(namespace, "securemodel", name)["metadata"]["uid"] for name in ("pod-deleted", "job-deleted")}
    for uid in uids.values():
        wait_until(lambda uid=uid: running(namespace, uid), 240, "training under way")
    scale_operator(0)
    try:
        # What this test is about: the trainings end while no operator runs.
        assert all(running(namespace, uid) for uid in uids.values()), "a training ended before the operator was down"
        for uid in uids.values():
            wait_until(lambda uid=uid: train_jobs(namespace, uid)[0]["status"].get("succeeded"), 480, "training done")
        kubectl("-n", namespace, "delete", "pod", "-l", f"securemodel.io/model-uid={uids['pod-deleted']}", "--wait=false")
        kubectl("-n", namespace, "delete", "job", "-l", f"securemodel.io/model-uid={uids['job-deleted']}", "--wait=false")
        # The pods stay, terminating, until the operator has recorded them: none vanishes unseen.
        for uid in uids.values():
            (pod,) = train_pods(namespace, uid)
            assert pod["metadata"].get("deletionTimestamp") and "securemodel.io/settlement" in pod["metadata"]["finalizers"]
    finally:
        scale_operator(2)
    credited = settled(namespace, uids["pod-deleted"], "Committed")
    whole = settled(namespace, uids["job-deleted"], "Committed")
    assert 0 < credited["epsilon"] <= EPSILON  # its own code's report of the steps it ran, at the operator's σ and q
    assert whole["epsilon"] == EPSILON  # no Job to vouch for the pod: the whole claim
    for uid in uids.values():
        wait_until(lambda uid=uid: not train_pods(namespace, uid), 120, "the pods let go")
    assert not train_jobs(namespace, uids["job-deleted"]), "a trained version was trained again"
    claims = [c for c in get(namespace, "privacybudget", BUDGET)["status"]["claims"] if c["consumer"]["uid"] in uids.values()]
    assert len(claims) == 2
