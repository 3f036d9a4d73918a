"""A SecureModel built on another model's weights, against the real API server: with ``spec.model.fromRound``
its schema, its waiting conditions, and that it claims nothing from any budget; with ``spec.model.from`` (a
fine-tuning) its claim, its train Job reading the source read-only, and the refusal of "public" weights that a
budget protects.

No worker pod runs here: the round's silos name a budget that does not exist, so the round never
starts, and its aggregator's report (the results ConfigMap the operator keeps, which is what the
model reads) is written by hand, as the operator writes it once the aggregator ends.
"""

import json
import subprocess
from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

from securemodel.api import GROUP, VERSION
from securemodel.operator.federated import children as round_children
from securemodel.operator.secure_model import children
from test_budget_operator import apply, budget, claims, get, model
from test_secure_model_children import condition, model_state, owned

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
API_VERSION = f"{GROUP}/{VERSION}"
DIGEST = "sha256:" + "0f" * 32


def served(name: str, round_name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "SecureModel", "metadata": {"name": name},
            "spec": {"model": {"fromRound": round_name}, "compression": {"quantization": "int8"},
                     "serving": {"clients": ["frontend"]}, **spec}}  # fmt: skip


def federated_round(name: str) -> dict[str, Any]:
    """A round whose silos' budget does not exist: it stays Pending and no pod of it runs."""
    clients = [{"name": f"s{i}", "data": {"source": f"builtin://wine?shard={i}&of=2"}, "budgetRef": "nobody"}
               for i in range(2)]  # fmt: skip
    return {"apiVersion": API_VERSION, "kind": "FederatedRound", "metadata": {"name": name},
            "spec": {"model": {"secureModelRef": "absent"}, "clients": clients, "privacy": {"epsilon": 1.0}}}  # fmt: skip


def report(api_client: kubernetes.client.ApiClient, namespace: str, round_name: str, result: dict[str, Any]) -> None:
    """The round's results ConfigMap with ``result`` as its aggregator's report (created or replaced)."""
    uid = get(api_client, namespace, "federatedrounds", round_name)["metadata"]["uid"]
    body = {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": round_children.results_name(round_name), "namespace": namespace,
                         "labels": round_children.labels(round_children.Owner(round_name, namespace, uid), "results")},
            "data": {"aggregator": json.dumps(result)}}  # fmt: skip
    core = kubernetes.client.CoreV1Api(api_client)
    try:
        core.replace_namespaced_config_map(body["metadata"]["name"], namespace, body)
    except kubernetes.client.ApiException as error:
        if error.status != 404:
            raise
        core.create_namespaced_config_map(namespace, body)


def test_a_model_from_a_round_waits_for_it_claims_nothing_and_compresses_only_its_reported_model(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    wine = {"source": "builtin://wine", "evaluation": {"source": "builtin://wine?part=evaluation"}}
    apply(kubectl, namespace, budget("b", 5.0), served("m", "fl", data=wine))

    wait_for(lambda: model_state(api_client, namespace, "m") == ("WaitingForRound", "RoundNotFound", "True"),
             what="the model waits for a round that does not exist")  # fmt: skip
    apply(kubectl, namespace, federated_round("fl"))
    wait_for(lambda: model_state(api_client, namespace, "m") == ("WaitingForRound", "WaitingForRound", "False"),
             what="the model wakes when the round appears, and waits for it to finish")  # fmt: skip
    report(api_client, namespace, "fl", {"status": "Failed", "error": "round 1 failed: 2 of 2 silos dropped"})
    wait_for(lambda: model_state(api_client, namespace, "m") == ("Failed", "RoundFailed", "True"),
             what="the model fails with its round")  # fmt: skip
    assert "2 of 2 silos dropped" in condition(get(api_client, namespace, "securemodels", "m"), "Ready")["message"]
    uid = get(api_client, namespace, "securemodels", "m")["metadata"]["uid"]
    assert owned(api_client, namespace, uid)["jobs"] == []

    report(api_client, namespace, "fl", {"status": "Succeeded", "roundsCompleted": 1,
                                         "artifact": "/artifacts/round-001.model", "digest": DIGEST})  # fmt: skip
    obj = wait_for(lambda: (o := get(api_client, namespace, "securemodels", "m")).get("status", {}).get("phase")
                   == "Compressing" and o, what="the model compresses the round's model")  # fmt: skip
    status = obj["status"]
    assert status["privacy"]["federatedRound"] == "fl" and "no claim" in status["privacy"]["note"]
    assert "epsilonSpent" not in status["privacy"] and "epsilonClaimed" not in status["privacy"]
    assert condition(obj, "Trained")["reason"] == "TrainedByFederatedRound"
    assert condition(obj, "BudgetReserved") == {}
    version = status["version"]
    jobs = wait_for(lambda: owned(api_client, namespace, uid)["jobs"], what="the compress Job")
    assert jobs == [children.compress_job_name("m", version)]  # no train Job
    job = kubernetes.client.BatchV1Api(api_client).read_namespaced_job(jobs[0], namespace)
    pod = job.spec.template.spec
    args = pod.containers[0].command
    assert args[args.index("--input-digest") + 1] == DIGEST and "--from-round" in args
    # only the round's final global model authenticates: bound to its uid and spec.rounds (1 by default)
    round_uid = get(api_client, namespace, "federatedrounds", "fl")["metadata"]["uid"]
    assert (args[args.index("--input-round-uid") + 1], args[args.index("--input-round") + 1]) == (round_uid, "1")
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["round"].persistent_volume_claim.claim_name == "fl-artifacts"
    assert volumes["round"].persistent_volume_claim.read_only is True
    assert volumes["round-key"].secret.secret_name == "fl-data-key"
    # no claim on any budget of the namespace, then or now
    assert claims(api_client, namespace, "b") == []
    assert "Traceback" not in operator.logs()


def test_the_api_server_keeps_serving_and_training_models_apart(kubectl: Kubectl, namespace: str) -> None:
    manifest = json.dumps(served("m", "fl"))
    assert kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest).returncode == 0
    trained = served("m", "fl")
    trained["spec"] = {"model": {"architecture": "mlp"}, "data": {"source": "builtin://wine"},
                       "privacy": {"budgetRef": "b", "epsilon": 1.0}}  # fmt: skip
    switched = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(trained))
    assert switched.returncode != 0
    assert "cannot switch between training and serving a FederatedRound's model" in switched.stderr
    other = served("m", "fl-2")  # another round: a new version, compressed anew
    assert kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(other)).returncode == 0


@pytest.mark.usefixtures("operator")
def test_a_fine_tuning_from_public_weights_claims_as_usual_but_never_from_weights_a_budget_protects(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    protected = budget("exports", 1.0, sources=("pvc://exports/",))
    tuned = model("tuned", "b", 1.0, model={"architecture": "mlp", "from": {"file": "pvc://exports/weights/mlp.pt"},
                                            "fineTune": {"freeze": ["net.0"]}})  # fmt: skip
    apply(kubectl, namespace, budget("b", 5.0), protected, tuned)
    wait_for(lambda: model_state(api_client, namespace, "tuned") == ("WaitingForBudget", "StartingWeightsProtected", "True"),
             what="weights a budget protects are refused as public weights")  # fmt: skip
    assert claims(api_client, namespace, "b") == [] and claims(api_client, namespace, "exports") == []

    public = model("tuned", "b", 1.0, model={"architecture": "mlp", "from": {"file": "pvc://weights/pretrained/mlp.pt"},
                                             "fineTune": {"freeze": ["net.0"]}})  # fmt: skip
    apply(kubectl, namespace, public)
    wait_for(lambda: condition(get(api_client, namespace, "securemodels", "tuned"), "BudgetReserved").get("status")
             == "True", what="the fine-tuning's claim on its own budget")  # fmt: skip
    uid = get(api_client, namespace, "securemodels", "tuned")["metadata"]["uid"]
    (name,) = wait_for(lambda: owned(api_client, namespace, uid)["jobs"], what="the train Job")
    pod = kubernetes.client.BatchV1Api(api_client).read_namespaced_job(name, namespace).spec.template.spec
    args = pod.containers[0].command
    assert args[args.index("--init-file") + 1] == "/init/pretrained/mlp.pt" and args[args.index("--freeze") + 1] == "net.0"
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["init"].persistent_volume_claim.claim_name == "weights"
    assert volumes["init"].persistent_volume_claim.read_only is True
    assert [c["state"] for c in claims(api_client, namespace, "b")] == ["Reserved"]
