"""A public SecureModel (``spec.privacy: {public: true}``) against the real API server: its CEL rules, the refusal
of data a budget of the namespace protects (no Job, no claim, a Warning Event), the train Job of unprotected data
(``--public``, no claim, no settlement finalizer), and that a budget protecting the data later stops it.

Train pods ask for a GPU the node does not have, so they stay Pending and read nothing.
"""

import json
import subprocess
from collections.abc import Callable
from typing import Any

import kubernetes

from test_budget_operator import apply, budget, claims, get, model
from test_secure_model_children import condition, model_state, owned

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def public(name: str, source: str, **overrides: Any) -> dict[str, Any]:
    body = model(name, "unused", 1.0, data={"source": source}, **overrides)
    body["spec"]["privacy"] = {"public": True}
    return body


def apply_one(kubectl: Kubectl, namespace: str, body: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(body))


def test_the_api_server_takes_public_exactly_and_never_switches_a_models_privacy_kind(
    kubectl: Kubectl, api_client: kubernetes.client.ApiClient, namespace: str
) -> None:
    body = public("m", "builtin://wine")
    created = apply_one(kubectl, namespace, body)
    assert created.returncode == 0, created.stderr
    assert get(api_client, namespace, "securemodels", "m")["spec"]["privacy"] == {"public": True}  # no defaults added
    for privacy, fragment in [
        ({"public": False}, "spec.privacy.public may only be true"),
        ({"public": True, "budgetRef": "b", "epsilon": 1.0}, "spec.privacy is either {public: true} alone"),
        ({"public": True, "maxGradNorm": 1.0}, "spec.privacy is either {public: true} alone"),
        ({"budgetRef": "b", "epsilon": 1.0}, "cannot switch between public training and training under a PrivacyBudget"),
    ]:
        rejected = apply_one(kubectl, namespace, {**body, "spec": {**body["spec"], "privacy": privacy}})
        assert rejected.returncode != 0 and fragment in rejected.stderr, (privacy, rejected.stderr)
    budgeted = model("n", "b", 1.0)
    assert apply_one(kubectl, namespace, budgeted).returncode == 0
    switched = apply_one(kubectl, namespace, {**budgeted, "spec": {**budgeted["spec"], "privacy": {"public": True}}})
    assert switched.returncode != 0 and "cannot switch between public training" in switched.stderr
    # the budget form without an epsilon says which field is missing
    missing = apply_one(kubectl, namespace, {**budgeted, "metadata": {"name": "o"},
                                             "spec": {**budgeted["spec"], "privacy": {"budgetRef": "b"}}})  # fmt: skip
    assert missing.returncode != 0 and "spec.privacy.epsilon: Required value" in missing.stderr


def test_a_public_model_over_protected_data_is_refused_and_runs_nothing(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    # the budget protects one half of wine; the whole dataset holds that half
    apply(kubectl, namespace, budget("b", 5.0, sources=("builtin://wine?shard=0&of=2",)), public("m", "builtin://wine"))
    wait_for(lambda: model_state(api_client, namespace, "m") == ("Failed", "DataProtected", "True"),
             what="the public model refused, naming the budget")  # fmt: skip
    obj = get(api_client, namespace, "securemodels", "m")
    assert "PrivacyBudget b" in condition(obj, "Ready")["message"]
    assert condition(obj, "PublicData")["status"] == "False"
    assert owned(api_client, namespace, obj["metadata"]["uid"])["jobs"] == [] and claims(api_client, namespace, "b") == []
    events = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=m,reason=DataProtected"
    )
    assert events.items and {event.type for event in events.items} == {"Warning"}


def test_a_public_model_trains_without_a_claim_until_a_budget_protects_its_data(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    operator: Any,
    wait_for: Callable[..., Any],
) -> None:
    apply(kubectl, namespace, budget("b", 5.0, sources=("builtin://wine?shard=0&of=2",)),
          public("m", "builtin://wine?shard=1&of=2"))  # fmt: skip
    uid = wait_for(lambda: get(api_client, namespace, "securemodels", "m")["metadata"]["uid"], what="the model")
    (name,) = wait_for(lambda: owned(api_client, namespace, uid)["jobs"], what="the public train Job")
    batch = kubernetes.client.BatchV1Api(api_client)
    job = batch.read_namespaced_job(name, namespace)
    args = job.spec.template.spec.containers[0].command
    assert "--public" in args and "--noise-multiplier" not in args
    assert not job.spec.template.metadata.finalizers  # no claim to settle
    assert claims(api_client, namespace, "b") == []
    obj = get(api_client, namespace, "securemodels", "m")
    assert condition(obj, "PublicData")["status"] == "True"

    # a second budget comes to protect the other half: the training (Pending on its GPU) is stopped for good
    apply(kubectl, namespace, budget("c", 5.0, sources=("builtin://wine?shard=1&of=2",)))
    wait_for(lambda: batch.read_namespaced_job(name, namespace).spec.suspend is True, what="the Job suspended")
    wait_for(lambda: model_state(api_client, namespace, "m") == ("Failed", "TrainingStopped", "True"),
             what="the model says its training stopped")  # fmt: skip
    obj = get(api_client, namespace, "securemodels", "m")
    assert condition(obj, "PublicData")["reason"] == "DataProtected" and "PrivacyBudget c" in condition(obj, "PublicData")["message"]
    assert claims(api_client, namespace, "b") == [] and claims(api_client, namespace, "c") == []
