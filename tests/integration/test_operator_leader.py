"""Two operator processes on one API server: one leads through a Lease, the other takes over when it dies."""

import signal
import time
from collections.abc import Callable
from typing import Any

import kubernetes

from securemodel.operator.secure_model import children
from securemodel.operator.settings import LEASE_NAME
from test_budget_operator import Kubectl, apply, budget, claims, get, model

PENDING = {"gpus": 1}  # no GPU on the node: the train pods stay Pending, nothing reads data


def holder(api_client: kubernetes.client.ApiClient, namespace: str) -> str | None:
    try:
        lease = kubernetes.client.CoordinationV1Api(api_client).read_namespaced_lease(LEASE_NAME, namespace)
    except kubernetes.client.ApiException:
        return None
    return lease.spec.holder_identity


def train_jobs(api_client: kubernetes.client.ApiClient, namespace: str) -> list[str]:
    listed = kubernetes.client.BatchV1Api(api_client).list_namespaced_job(
        namespace, label_selector=f"{children.COMPONENT_LABEL}=train"
    )
    return sorted(job.metadata.name for job in listed.items)


def test_one_of_two_operators_leads_and_the_other_takes_over_within_30_seconds(
    kubectl: Kubectl,
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    first = start_operator(namespace)
    wait_for(lambda: holder(api_client, namespace) is not None, what="a leader")
    second = start_operator(namespace)
    leader = holder(api_client, namespace)
    apply(kubectl, namespace, budget("b", 1.0), model("m", "b", 0.5, resources=PENDING))
    wait_for(lambda: [c["state"] for c in claims(api_client, namespace, "b")] == ["Reserved"], what="the claim reserved")
    wait_for(lambda: len(train_jobs(api_client, namespace)) == 1, what="the train Job")
    wait_for(lambda: get(api_client, namespace, "securemodels", "m").get("status", {}).get("phase") == "Training",
             what="the model training")  # fmt: skip
    assert len(claims(api_client, namespace, "b")) == 1 and len(train_jobs(api_client, namespace)) == 1
    processes = {first.process.pid: first, second.process.pid: second}
    active = next(op for op in processes.values() if (leader or "").endswith(f"-{op.process.pid}"))
    standby = next(op for op in processes.values() if op is not active)
    assert "waiting to lead" in standby.logs() and "leading" not in standby.logs().replace("waiting to lead", "")
    fields = get(api_client, namespace, "securemodels", "m")["metadata"].get("managedFields", [])
    status_writers = {f["manager"] for f in fields if f.get("subresource") == "status"}
    assert len(status_writers) == 1, status_writers

    active.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    active.process.wait()
    apply(kubectl, namespace, model("n", "b", 0.5, resources=PENDING))
    wait_for(lambda: len(claims(api_client, namespace, "b")) == 2, what="the standby to take over", timeout=60)
    took_over = time.monotonic() - killed
    assert took_over < 30, f"the standby took {took_over:.1f}s to reconcile after the leader died"
    assert holder(api_client, namespace) != leader
    wait_for(lambda: len(train_jobs(api_client, namespace)) == 2, what="the new model's train Job")
    assert "Traceback" not in standby.logs()


def test_a_standby_leaves_at_once_on_sigterm_and_the_leader_keeps_leading(
    api_client: kubernetes.client.ApiClient,
    namespace: str,
    start_operator: Callable[..., Any],
    wait_for: Callable[..., Any],
) -> None:
    """In a pod the operator is PID 1, for which an unhandled SIGTERM is dropped: a standby would wait out the pod's
    grace period. Here (not PID 1) an unhandled SIGTERM would kill it instead: -15, not a clean exit."""
    first = start_operator(namespace)
    wait_for(lambda: holder(api_client, namespace) is not None, what="a leader")
    second = start_operator(namespace)
    leader = holder(api_client, namespace)
    standby = next(op for op in (first, second) if not (leader or "").endswith(f"-{op.process.pid}"))
    wait_for(lambda: "waiting to lead" in standby.logs(), what="the standby waiting")
    standby.process.send_signal(signal.SIGTERM)
    assert standby.process.wait(timeout=10) == 0, standby.logs()
    assert "SIGTERM before reconciling anything: exiting" in standby.logs()
    assert holder(api_client, namespace) == leader
