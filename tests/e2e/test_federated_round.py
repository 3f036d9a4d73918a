"""A FederatedRound on the real cluster: three silos in three namespaces train on Flower with SecAgg+.

Each silo's budget lives in the silo's namespace and consents to rounds of the hub namespace; each
silo is charged its own ε, which Microsoft's prv-accountant reproduces from the σ, q and steps in
status. A silo whose budget does not consent gets no pod.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from prv_accountant.dpsgd import DPSGDAccountant

from e2e_support import SERVED_CLIENT, condition, get, pod_result, restricted_namespace, start_client, wait_ready, wait_until
from test_cluster import apply, kubectl

pytestmark = pytest.mark.e2e

SOURCE = "builtin://breast_cancer"
EPSILON = 1.0
ROUND = "tumor-round"


def budget(namespace: str, shard: int, consumers: list[dict[str, str]]) -> dict[str, Any]:
    return {"apiVersion": "securemodel.io/v1alpha1", "kind": "PrivacyBudget",
            "metadata": {"name": "clinic", "namespace": namespace},
            "spec": {"epsilon": 5.0, "delta": 1e-5, "data": {"sources": [f"{SOURCE}?shard={shard}&of=3"]},
                     "consumers": consumers}}  # fmt: skip


def federated_round(name: str, silos: list[tuple[str, str, int]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "securemodel.io/v1alpha1", "kind": "FederatedRound", "metadata": {"name": name},
            "spec": {"model": {"secureModelRef": "architecture"},
                     "clients": [{"name": silo, "namespace": ns, "budgetRef": "clinic",
                                  "data": {"source": f"{SOURCE}?shard={shard}&of=3"}} for silo, ns, shard in silos],
                     "rounds": 2, "minClients": 2,
                     "training": {"localEpochs": 1, "batchSize": 32, "learningRate": 0.1},
                     "privacy": {"epsilon": EPSILON, "delta": 1e-5, "maxGradNorm": 1.0},
                     "secureAggregation": {"enabled": True, "threshold": 2},
                     "evaluation": {"source": f"{SOURCE}?part=evaluation"},
                     "timeout": "10m", **spec}}  # fmt: skip


@pytest.fixture(scope="module")
def namespaces(operator: None) -> Iterator[list[str]]:
    """The hub (the round, and silo a) and the namespaces of silos b and c, each with its silo's budget."""
    with contextlib.ExitStack() as stack:
        names = [stack.enter_context(restricted_namespace(f"e2e-fl-{silo}")) for silo in ("hub", "b", "c")]
        # Left first: the round, while the operator still runs to settle its silos' claims.
        stack.callback(kubectl, "-n", names[0], "delete", "federatedround", "--all", "--timeout=120s", check=False)
        consent = [{"kind": "FederatedRound", "namespace": names[0]}]
        apply(names[0], budget(names[0], 0, []))
        apply(names[1], budget(names[1], 1, consent))
        apply(names[2], budget(names[2], 2, consent))
        # The architecture the round trains: a SecureModel's spec.model (this one waits for a budget it never gets).
        apply(names[0], {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel", "metadata": {"name": "architecture"},
                         "spec": {"model": {"architecture": "mlp", "params": {"hidden": [32]}}, "data": {"source": SOURCE},
                                  "privacy": {"budgetRef": "none", "epsilon": 1.0}, "serving": {"replicas": 0}}})  # fmt: skip
        yield names


def silo_pods(namespace: str) -> list[dict[str, Any]]:
    return json.loads(kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]


def test_a_silo_whose_budget_does_not_consent_gets_no_pod(namespaces: list[str]) -> None:
    hub, b, c = namespaces
    stranger = f"e2e-fl-x-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", stranger)
    try:
        apply(stranger, budget(stranger, 1, []))  # consents to nobody outside its namespace
        apply(hub, federated_round("uninvited", [("a", hub, 0), ("x", stranger, 1)]))

        def refused() -> dict[str, Any] | None:
            found = condition(get(hub, "federatedround", "uninvited"), "Consented")
            return found if found.get("status") == "False" else None

        consented = wait_until(refused, 60, "Consented False naming the budget that does not consent")
        assert stranger in consented["message"] and "clinic" in consented["message"], consented["message"]
        assert silo_pods(stranger) == []
        status = get(hub, "federatedround", "uninvited")["status"]
        assert status["phase"] == "Pending"
        assert not (get(stranger, "privacybudget", "clinic").get("status") or {}).get("claims")
    finally:
        kubectl("-n", hub, "delete", "federatedround", "uninvited", "--timeout=60s", check=False)
        kubectl("delete", "namespace", stranger, "--wait=false")


def test_three_silos_train_two_rounds_and_each_pays_its_own_budget(namespaces: list[str]) -> None:
    hub, b, c = namespaces
    apply(hub, federated_round(ROUND, [("a", hub, 0), ("b", b, 1), ("c", c, 2)]))
    # Ready once it has succeeded and the silos' claims are settled (their pods gone)
    done = wait_ready(hub, "federatedround", ROUND, 600, "the round finished and its claims settled")
    status = done["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["roundsCompleted"] == 2 and status["submitted"] == "3/3"
    assert status["model"]["digest"].startswith("sha256:")
    assert 0.5 < status["model"]["accuracy"] <= 1 and status["model"]["evaluationExamples"] == 113
    assert condition(done, "Ready")["status"] == "True"
    for participant, namespace in zip(sorted(status["participants"], key=lambda p: p["name"]), namespaces):
        assert participant["state"] == "Submitted" and participant["claim"] == "Committed", participant
        sigma, q, steps = participant["noiseMultiplier"], participant["sampleRate"], participant["steps"]
        _, estimate, upper = DPSGDAccountant(noise_multiplier=sigma, sampling_probability=q, max_steps=steps,
                                             eps_error=0.01, delta_error=1e-8).compute_epsilon(delta=1e-5, num_steps=steps)  # fmt: skip
        assert participant["epsilonSpent"] == pytest.approx(estimate, abs=0.02) and participant["epsilonSpent"] <= EPSILON
        claims = get(namespace, "privacybudget", "clinic")["status"]["claims"]
        (claim,) = [c for c in claims if c["consumer"]["kind"] == "FederatedRound"]
        assert claim["state"] == "Committed" and claim["epsilon"] == pytest.approx(participant["epsilonSpent"])
        assert claim["consumer"]["namespace"] == hub


SERVED = "tumor-federated"
CLIENT = "frontend"


def test_the_rounds_global_model_is_served_over_mtls_without_training_or_a_new_claim(namespaces: list[str]) -> None:
    hub = namespaces[0]
    finished = finished_round(hub, ROUND)
    assert finished["status"]["phase"] == "Succeeded", "this test serves the round of the test before it"
    ledgers = {ns: get(ns, "privacybudget", "clinic")["status"]["claims"] for ns in namespaces}
    apply(hub, {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel", "metadata": {"name": SERVED},
                "spec": {"model": {"fromRound": ROUND},
                         "data": {"source": SOURCE, "evaluation": {"source": f"{SOURCE}?part=evaluation"}},
                         "compression": {"pruning": {"sparsity": 0.5}, "quantization": "int8"},
                         "serving": {"replicas": 1, "clients": [CLIENT]}}})  # fmt: skip
    served = wait_ready(hub, "securemodel", SERVED, 300, "the SecureModel serving the round's model to be Ready")
    status = served["status"]
    assert status["phase"] == "Serving" and condition(served, "Trained")["reason"] == "TrainedByFederatedRound"
    assert condition(served, "BudgetReserved") == {}
    assert status["privacy"]["federatedRound"] == ROUND and "epsilonSpent" not in status["privacy"]
    # the uncompressed model is the round's: the same accuracy on the same public data
    assert status["model"]["accuracy"] == pytest.approx(finished["status"]["model"]["accuracy"], abs=1e-9)
    jobs = json.loads(kubectl("-n", hub, "get", "jobs", "-l", f"securemodel.io/model={SERVED}", "-o", "json").stdout)
    assert [job["metadata"]["labels"]["securemodel.io/component"] for job in jobs["items"]] == ["compress"]
    # no claim on any silo's budget: the ledgers are as the round left them
    assert {ns: get(ns, "privacybudget", "clinic")["status"]["claims"] for ns in namespaces} == ledgers

    url = f"https://{SERVED}.{hub}.svc:8443"
    start_client(hub, "served-client", f"{SERVED}-client-{CLIENT}", SERVED_CLIENT, url, SERVED, f"{SOURCE}?shard=0&of=3")
    result = pod_result(hub, "served-client", 240)
    assert result["examples"] == 113
    assert result["accuracy"] == pytest.approx(status["model"]["compressedAccuracy"], abs=1e-9)
    assert result["no_certificate"], "a client without a certificate was served"


TUNED = "tumor-fine-tuned"


def test_a_silo_fine_tunes_the_global_model_privately_with_its_first_layer_frozen(namespaces: list[str]) -> None:
    """Clinic a starts DP-SGD from the round's global model on its own shard, under its own claim; the train pod
    reads the round's authenticated model, trains only the unfrozen parameters, and its ε is charged once."""
    hub = namespaces[0]
    finished = finished_round(hub, ROUND)
    assert finished["status"]["phase"] == "Succeeded", "this test fine-tunes the round of an earlier test"
    apply(hub, {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel", "metadata": {"name": TUNED},
                "spec": {"model": {"architecture": "mlp", "params": {"hidden": [32]},
                                   "from": {"federatedRoundRef": ROUND}, "fineTune": {"freeze": ["1"]}},
                         "data": {"source": f"{SOURCE}?shard=0&of=3",
                                  "evaluation": {"source": f"{SOURCE}?part=evaluation"}},
                         "privacy": {"budgetRef": "clinic", "epsilon": EPSILON},
                         "training": {"epochs": 2, "batchSize": 32, "learningRate": 0.05},
                         "serving": {"replicas": 0}}})  # fmt: skip
    tuned = wait_ready(hub, "securemodel", TUNED, 420, "the fine-tuned SecureModel to be Ready")
    assert condition(tuned, "Trained")["status"] == "True"
    assert 0.5 < tuned["status"]["model"]["accuracy"] <= 1
    spent = tuned["status"]["privacy"]["epsilonSpent"]
    assert 0 < spent <= EPSILON
    (claim,) = [c for c in get(hub, "privacybudget", "clinic")["status"]["claims"]
                if c["consumer"]["kind"] == "SecureModel" and c["consumer"]["name"] == TUNED]  # fmt: skip
    assert claim["state"] == "Committed" and claim["epsilon"] == pytest.approx(spent)

    pods = json.loads(kubectl("-n", hub, "get", "pods", "-l", f"securemodel.io/model={TUNED},securemodel.io/component=train",
                              "-o", "json").stdout)["items"]  # fmt: skip
    (train,) = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    (terminated,) = [s["state"]["terminated"] for s in train["status"]["containerStatuses"] if s["name"] == "train"]
    result = json.loads(terminated["message"])
    # the weights came from the round's final global model, authenticated by the digest its aggregator reported
    assert result["init"] is not None and finished["status"]["model"]["digest"] in json.dumps(result["init"])
    # the first Linear layer of a 30-feature input with 32 units: 30·32 weights and 32 biases, held fixed
    assert result["frozen"] == ["1"] and result["frozenParameters"] == 30 * 32 + 32
    assert result["trainableParameters"] == 32 * 2 + 2


# Flower logs this line on each SecAgg+ stage message a SuperNode receives; the third is the one it trains on.
TRAIN_MESSAGE = "Receiving: train message"
TRAINING_STAGE = 3


def kill_when_training(namespace: str, round_name: str) -> str:
    """Delete the silo pod of ``round_name`` in ``namespace`` once it has received the message it trains on."""

    def training_pod() -> str | None:
        for pod in silo_pods(namespace):
            labels = pod["metadata"].get("labels") or {}
            if labels.get("securemodel.io/component") != "supernode" or not pod["metadata"]["name"].startswith(round_name):
                continue
            logs = kubectl("-n", namespace, "logs", pod["metadata"]["name"], "-c", "supernode", check=False).stdout
            if logs.count(TRAIN_MESSAGE) >= TRAINING_STAGE:
                return str(pod["metadata"]["name"])
        return None

    name = wait_until(training_pod, 300, f"the silo pod of {round_name} in {namespace} training")
    kubectl("-n", namespace, "delete", "pod", name, "--grace-period=1", "--wait=false")
    return name


def finished_round(hub: str, name: str) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        found = get(hub, "federatedround", name)
        phase = (found.get("status") or {}).get("phase")
        settled = all(p.get("claim") in ("Committed", "Released") for p in found["status"].get("participants") or [{}])
        return found if phase in ("Succeeded", "Failed") and settled else None

    return wait_until(finished, 600, f"round {name} finished and its claims settled")


def test_a_silo_killed_mid_round_drops_and_the_survivors_finish(namespaces: list[str]) -> None:
    hub, b, c = namespaces
    apply(hub, federated_round("dropout", [("a", hub, 0), ("b", b, 1), ("c", c, 2)], rounds=1, timeout="5m"))
    kill_when_training(c, "dropout")
    status = finished_round(hub, "dropout")["status"]
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert status["submitted"] == "2/3" and status["model"]["digest"].startswith("sha256:")
    participants = {p["name"]: p for p in status["participants"]}
    assert participants["c"]["state"] == "Dropped" and participants["c"]["rounds"] == [{"round": 1, "state": "Dropped"}]
    # Its pod started: it may have read its data, so its ε is spent although it submitted nothing.
    assert participants["c"]["claim"] == "Committed" and participants["c"]["epsilonSpent"] > 0
    assert all(participants[s]["state"] == "Submitted" for s in ("a", "b"))


def test_too_few_survivors_fail_the_round_naming_who_dropped(namespaces: list[str]) -> None:
    hub, b, c = namespaces
    apply(hub, federated_round("unmaskable", [("a", hub, 0), ("b", b, 1), ("c", c, 2)], rounds=1, minClients=3, timeout="5m"))
    kill_when_training(c, "unmaskable")
    done = finished_round(hub, "unmaskable")
    status = done["status"]
    assert status["phase"] == "Failed", json.dumps(status, indent=1)
    message = condition(done, "Aggregated")["message"]
    assert "c (" in message and "dropped" in message and "min-clients is 3" in message, message
    assert "model" not in status  # no global model from a failed round
