"""What users see of the three CRDs through kubectl, against the real API server."""

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]

MINIMAL_MODEL = """
apiVersion: securemodel.io/v1alpha1
kind: SecureModel
metadata: {name: minimal}
spec:
  model: {architecture: mlp}
  data: {source: builtin://breast_cancer}
  privacy: {budgetRef: breast-cancer, epsilon: 2}
"""

MINIMAL_ROUND = """
apiVersion: securemodel.io/v1alpha1
kind: FederatedRound
metadata: {name: minimal}
spec:
  model: {secureModelRef: minimal}
  clients:
  - {name: a, data: {source: "builtin://breast_cancer?shard=0&of=2"}, budgetRef: breast-cancer}
  - {name: b, data: {source: "builtin://breast_cancer?shard=1&of=2"}, budgetRef: breast-cancer}
  privacy: {epsilon: 1}
"""

MINIMAL_BUDGET = """
apiVersion: securemodel.io/v1alpha1
kind: PrivacyBudget
metadata: {name: breast-cancer}
spec: {epsilon: 10, data: {sources: ["builtin://breast_cancer"]}}
"""


def apply(kubectl: Kubectl, namespace: str, manifest: str) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "-n", namespace, "-f", "-", stdin=manifest)


def get(kubectl: Kubectl, namespace: str, what: str) -> dict[str, Any]:
    result = kubectl("get", "-n", namespace, what, "-o", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_examples_apply_cleanly_and_reapply_unchanged(kubectl: Kubectl, namespace: str) -> None:
    first = kubectl("apply", "-n", namespace, "-f", str(REPO / "examples"))
    assert first.returncode == 0, first.stderr
    assert sorted(first.stdout.split("\n")[:-1]) == [
        "federatedround.securemodel.io/tumor-classifier-round-1 created",
        "privacybudget.securemodel.io/breast-cancer created",
        "securemodel.securemodel.io/tumor-classifier created",
    ]
    again = kubectl("apply", "-n", namespace, "-f", str(REPO / "examples"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("unchanged") == 3


def test_the_category_and_the_short_names_find_the_kinds(kubectl: Kubectl, namespace: str) -> None:
    assert kubectl("apply", "-n", namespace, "-f", str(REPO / "examples")).returncode == 0
    everything = kubectl("get", "securemodel-all", "-n", namespace, "-o", "name")
    assert sorted(everything.stdout.split()) == [
        "federatedround.securemodel.io/tumor-classifier-round-1",
        "privacybudget.securemodel.io/breast-cancer",
        "securemodel.securemodel.io/tumor-classifier",
    ]
    # The kind's singular name, as a newcomer types it, names the kind (the category does not shadow it).
    one = kubectl("get", "securemodel", "tumor-classifier", "-n", namespace, "-o", "name")
    assert one.stdout.strip() == "securemodel.securemodel.io/tumor-classifier", one.stderr
    for short, name in [
        ("pbudget", "breast-cancer"),
        ("smodel", "tumor-classifier"),
        ("fround", "tumor-classifier-round-1"),
    ]:
        result = kubectl("get", short, "-n", namespace, "-o", "name")
        assert result.stdout.strip().endswith(f"/{name}"), (short, result.stdout, result.stderr)


def test_kubectl_get_shows_phase_epsilon_endpoint_and_age(kubectl: Kubectl, namespace: str) -> None:
    assert kubectl("apply", "-n", namespace, "-f", str(REPO / "examples")).returncode == 0
    headers = {
        "pbudget": "NAME PHASE READY EPSILON COMMITTED RESERVED AVAILABLE AGE",
        "smodel": "NAME PHASE READY EPSILON SPENT ACCURACY ENDPOINT AGE",
        "fround": "NAME PHASE READY ROUND ROUNDS SUBMITTED ACCURACY AGE",
    }
    for short, header in headers.items():
        table = kubectl("get", short, "-n", namespace)
        assert " ".join(table.stdout.splitlines()[0].split()) == header
    wide = kubectl("get", "pbudget", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert " ".join(wide[0].split()) == "NAME PHASE READY EPSILON COMMITTED RESERVED AVAILABLE POLICY AGE"
    assert wide[1].split()[0] == "breast-cancer" and "dpf" in wide[1].split()
    wide = kubectl("get", "smodel", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert " ".join(wide[0].split()) == "NAME PHASE READY EPSILON SPENT ACCURACY ENDPOINT VERSION SERVING AGE"


def test_the_api_server_fills_in_defaults(kubectl: Kubectl, namespace: str) -> None:
    for manifest in (MINIMAL_BUDGET, MINIMAL_MODEL, MINIMAL_ROUND):
        result = apply(kubectl, namespace, manifest)
        assert result.returncode == 0, result.stderr
    budget = get(kubectl, namespace, "pbudget/breast-cancer")["spec"]
    assert budget == {"epsilon": 10, "delta": 1e-05, "policy": "fcfs", "data": {"sources": ["builtin://breast_cancer"]}}
    model = get(kubectl, namespace, "smodel/minimal")["spec"]
    assert model["data"] == {"source": "builtin://breast_cancer"}
    # spec.privacy's delta, maxGradNorm and accountant have no schema default (so {public: true} stays exact):
    # the operator takes 1e-5, 1.0 and prv
    assert model["privacy"] == {"budgetRef": "breast-cancer", "epsilon": 2}
    assert model["training"] == {"epochs": 10, "batchSize": 64, "learningRate": 0.1, "optimizer": "sgd", "seed": 0}
    assert model["compression"] == {"pruning": {"sparsity": 0}, "quantization": "none"}
    assert model["serving"] == {"replicas": 1, "certificateLifetime": "720h"}
    assert model["resources"] == {"gpus": 0, "cpu": "1", "memory": "2Gi"}
    federated = get(kubectl, namespace, "fround/minimal")["spec"]
    assert federated["secureAggregation"] == {"enabled": True}
    assert federated["training"] == {"localEpochs": 1, "batchSize": 32, "learningRate": 0.1}
    assert federated["timeout"] == "10m"
    assert "minClients" not in federated


def test_a_models_budget_ref_cannot_change_but_its_epsilon_can(kubectl: Kubectl, namespace: str) -> None:
    assert apply(kubectl, namespace, MINIMAL_MODEL).returncode == 0
    moved = apply(kubectl, namespace, MINIMAL_MODEL.replace("budgetRef: breast-cancer", "budgetRef: other"))
    assert moved.returncode != 0
    assert "spec.privacy.budgetRef" in moved.stderr and "is immutable" in moved.stderr
    cheaper = apply(kubectl, namespace, MINIMAL_MODEL.replace("epsilon: 2", "epsilon: 1.5"))
    assert cheaper.returncode == 0, cheaper.stderr


def test_a_federated_round_cannot_be_edited(kubectl: Kubectl, namespace: str) -> None:
    assert apply(kubectl, namespace, MINIMAL_ROUND).returncode == 0
    edited = apply(kubectl, namespace, MINIMAL_ROUND.replace("epsilon: 1", "epsilon: 3"))
    assert edited.returncode != 0
    assert "spec: Invalid value" in edited.stderr and "spec is immutable" in edited.stderr
    labelled = kubectl("label", "-n", namespace, "fround/minimal", "team=oncology")
    assert labelled.returncode == 0, labelled.stderr


def test_a_budgets_epsilon_can_be_lowered_and_raised(kubectl: Kubectl, namespace: str) -> None:
    assert apply(kubectl, namespace, MINIMAL_BUDGET).returncode == 0
    for epsilon in ("4", "12.5"):
        result = apply(kubectl, namespace, MINIMAL_BUDGET.replace("epsilon: 10", f"epsilon: {epsilon}"))
        assert result.returncode == 0, result.stderr
    assert get(kubectl, namespace, "pbudget/breast-cancer")["spec"]["epsilon"] == 12.5
