"""The operator, run as `securemodel-operator`, reconciles the three kinds in a real API server."""

import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import kubernetes
import pytest

REPO = Path(__file__).resolve().parents[2]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]
OBJECTS = {
    "privacybudgets": ("breast-cancer", "Available", "True", "BudgetAvailable"),
    "securemodels": ("tumor-classifier", "WaitingForBudget", "False", "WaitingForBudget"),
    "federatedrounds": ("tumor-classifier-round-1", "Pending", "False", "BudgetNotFound"),  # clinics b and c have none
}


def read(api_client: kubernetes.client.ApiClient, namespace: str, plural: str, name: str) -> dict[str, Any]:
    api = kubernetes.client.CustomObjectsApi(api_client)
    return api.get_namespaced_custom_object("securemodel.io", "v1alpha1", namespace, plural, name)


def reconciled(
    api_client: kubernetes.client.ApiClient, namespace: str, plural: str, name: str, generation: int = 1
) -> dict[str, Any]:
    """The object once it is at ``generation`` and its status describes it, else an empty dict."""
    obj = read(api_client, namespace, plural, name)
    observed = (obj.get("status") or {}).get("observedGeneration")
    return obj if obj["metadata"]["generation"] == observed == generation else {}


def events(api_client: kubernetes.client.ApiClient, namespace: str, name: str) -> list[Any]:
    listed = kubernetes.client.CoreV1Api(api_client).list_namespaced_event(namespace)
    return [e for e in listed.items if e.involved_object.name == name]


def test_existing_objects_get_status_a_ready_condition_and_events(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    # The examples as they are, but for the budget's dpf unlocking: with ten steps the single
    # arriving claim unlocks ε = 1, less than the model's ε = 2, so the model keeps waiting and
    # this test sees the same statuses however fast the operator is.
    manifests = "\n---\n".join(path.read_text() for path in sorted((REPO / "examples").glob("*.yaml")))
    assert "unlockSteps: 5" in manifests
    applied = kubectl("apply", "-n", namespace, "-f", "-", stdin=manifests.replace("unlockSteps: 5", "unlockSteps: 10"))
    assert applied.returncode == 0, applied.stderr
    start_operator(namespace)
    for plural, (name, phase, ready, reason) in OBJECTS.items():
        obj = wait_for(partial(reconciled, api_client, namespace, plural, name), what=f"{plural}/{name} status")
        status = obj["status"]
        assert status["phase"] == phase
        condition = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert condition["status"] == ready
        assert condition["reason"] == reason
        assert condition["message"]
        assert condition["lastTransitionTime"].endswith("Z")
        assert condition["observedGeneration"] == 1
        posted = wait_for(
            lambda n=name, r=reason: [e for e in events(api_client, namespace, n) if e.reason == r],
            what=f"a {reason} Event about {name}",
        )
        assert posted[0].message == condition["message"]
        assert posted[0].reporting_component == "securemodel-operator"
    # kopf keeps the configuration it last handled only where an update handler diffs against it: one write
    # per new object less for the kinds that have only a daemon and a deletion handler.
    last_handled = "securemodel.io/last-handled-configuration"
    for plural, (name, *_) in OBJECTS.items():
        metadata = read(api_client, namespace, plural, name)["metadata"]
        assert (last_handled in (metadata.get("annotations") or {})) == (plural == "privacybudgets"), plural
        if plural != "privacybudgets":
            assert "securemodel.io/finalizer" in metadata["finalizers"]
    budget = read(api_client, namespace, "privacybudgets", "breast-cancer")["status"]
    assert (budget["epsilonCommitted"], budget["epsilonReserved"], budget["epsilonAvailable"]) == (0, 0, 10)
    rounds = read(api_client, namespace, "federatedrounds", "tumor-classifier-round-1")["status"]
    assert [p["state"] for p in rounds["participants"]] == ["Pending"] * 3
    shown = kubectl("get", "securemodel-all", "-n", namespace).stdout
    assert "Available" in shown and "WaitingForBudget" in shown and "Pending" in shown


@pytest.mark.usefixtures("operator")
def test_a_spec_change_is_observed_without_a_new_transition(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    wait_for: Callable[..., Any],
) -> None:
    budget = (REPO / "examples" / "privacybudget.yaml").read_text()
    assert kubectl("apply", "-n", namespace, "-f", "-", stdin=budget).returncode == 0
    first = wait_for(lambda: reconciled(api_client, namespace, "privacybudgets", "breast-cancer"))
    lowered = kubectl("apply", "-n", namespace, "-f", "-", stdin=budget.replace("epsilon: 10.0", "epsilon: 4.0"))
    assert lowered.returncode == 0, lowered.stderr
    second = wait_for(
        lambda: reconciled(api_client, namespace, "privacybudgets", "breast-cancer", generation=2),
        what="generation 2 observed",
    )
    assert second["status"]["epsilonAvailable"] == 4
    before = next(c for c in first["status"]["conditions"] if c["type"] == "Ready")
    after = next(c for c in second["status"]["conditions"] if c["type"] == "Ready")
    assert after["observedGeneration"] == 2
    assert after["message"] == "ε 4 of 4 available (committed 0, reserved 0; summed they would be 0)"
    assert after["lastTransitionTime"] == before["lastTransitionTime"]


def test_the_health_endpoint_answers_before_and_after_leading(operator: Any, wait_for: Callable[..., Any]) -> None:
    """A standby answers while it waits for the Lease; the leader answers with kopf's probe report.

    Between the two the port changes hands, so a probe may be refused once (the Deployment's
    probes tolerate that with their failure threshold); the test waits for the leader's answer.
    """

    def leaders_report() -> tuple[dict[str, Any]] | None:
        report = operator.health()
        return (report,) if report is not None and "standby" not in report else None

    wait_for(lambda: "leading:" in operator.logs(), what="the operator to lead")
    (report,) = wait_for(leaders_report, what="the leader's health report")
    assert isinstance(report, dict)
