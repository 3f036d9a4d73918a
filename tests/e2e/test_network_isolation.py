"""A model's pods have only the connections they need, enforced by the cluster's NetworkPolicy engine.

The operator writes each policy before any pod it selects exists; here a pod carrying a train
pod's labels tries to reach a Service in another namespace and the node, and fails, while the same
pod without those labels succeeds (so the check can tell). The serving side (the mTLS port still
answers an authorised client) is what every test of test_secure_model.py exercises.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from e2e_support import get, pod_result, restricted_namespace, wait_until
from test_cluster import apply, kubectl, pod
from test_secure_model import SPEC

pytestmark = pytest.mark.e2e

# Each target is tried every second for 15 s (an attempt at a blocked target waits 1 s for its timeout);
# the result is the last attempt's. The engine enforces a policy a second or two after the pod starts
# (kube-router syncs on the pod's event); the operator's own pods wait for it in their await-isolation
# init container, which probes the API server's Service.
PROBE = r"""
import json, socket, sys, time
results, deadline = {}, time.monotonic() + 15
while True:
    for target in sys.argv[1:]:
        host, port = target.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            results[target] = "connected"
        except OSError as error:
            results[target] = type(error).__name__
    if time.monotonic() >= deadline:
        break
    time.sleep(1)
print("RESULT " + json.dumps(results))
"""
# kube-dns's Service in kube-system (another namespace), the kubelet on the node, and the API server's
# Service (an unlabelled pod reaches it, so the isolation gate's probe of it means something).
TARGETS = ["10.96.0.10:53", "10.244.0.1:10250", "10.96.0.1:443"]


@pytest.fixture(scope="module")
def isolated_model(operator: None) -> Iterator[tuple[str, str]]:
    """(namespace, uid) of a model whose train pod never starts (it asks for a GPU the node lacks)."""
    with restricted_namespace("e2e-net") as namespace:
        apply(namespace, {"apiVersion": "securemodel.io/v1alpha1", "kind": "PrivacyBudget", "metadata": {"name": "b"},
                          "spec": {"epsilon": 5.0, "data": {"sources": [SPEC["data"]["source"]]}}})  # fmt: skip
        spec = {**SPEC, "privacy": {**SPEC["privacy"], "budgetRef": "b"}, "resources": {**SPEC["resources"], "gpus": 1},
                "serving": {"replicas": 0}}  # fmt: skip
        apply(namespace, {"apiVersion": "securemodel.io/v1alpha1", "kind": "SecureModel", "metadata": {"name": "m"},
                          "spec": spec})  # fmt: skip
        uid = get(namespace, "securemodel", "m")["metadata"]["uid"]
        yield namespace, uid


def start_probe(namespace: str, name: str, labels: dict[str, str]) -> None:
    spec = pod(name, ["python", "-c", PROBE, *TARGETS])
    spec["metadata"]["labels"] = labels
    spec["spec"]["securityContext"] = {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}}
    spec["spec"]["containers"][0]["imagePullPolicy"] = "IfNotPresent"
    apply(namespace, spec)


def test_a_pod_with_a_train_pods_labels_reaches_nothing(isolated_model: tuple[str, str]) -> None:
    namespace, uid = isolated_model

    def policies() -> list[str] | None:
        found = json.loads(kubectl("-n", namespace, "get", "networkpolicies", "-o", "json").stdout)["items"]
        names = sorted(p["metadata"]["name"] for p in found)
        return names if names else None

    # The serving pods' policy comes with the serving Deployment, which this model never reaches.
    assert wait_until(policies, 60, "the model's NetworkPolicy") == ["m-isolated"]
    start_probe(namespace, "control", {"app": "probe"})
    start_probe(namespace, "as-train", {"securemodel.io/model-uid": uid, "securemodel.io/component": "train"})
    unlabelled = pod_result(namespace, "control", 120)
    assert unlabelled == {target: "connected" for target in TARGETS}, "the probe itself cannot connect"
    train = pod_result(namespace, "as-train", 120)
    assert all(result != "connected" for result in train.values()), train
