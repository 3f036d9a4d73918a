"""A deleted model waits on its train Jobs and pods as the API server stores them, not as a stale index shows them."""

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import kubernetes

from securemodel.operator.secure_model import children
from securemodel.operator.secure_model.calibration import plan
from securemodel.operator.secure_model.decide import Snapshot, Verb, decide_deletion
from securemodel.operator.secure_model.observe import with_stored_jobs_and_pods
from securemodel.operator.secure_model.spec import parse
from securemodel.privacy import Calibration, Claim, ClaimState, Consumer, Ledger

SPEC = parse({"model": {"architecture": "mlp"}, "data": {"source": "builtin://breast_cancer"},
              "privacy": {"budgetRef": "b", "epsilon": 2.0}, "training": {"epochs": 2}})  # fmt: skip
PLAN = plan(SPEC, 2.0, 1e-5)
VERSION = SPEC.versions.training


def train_job(owner: children.Owner, name: str, version: str) -> dict[str, Any]:
    """A suspended train Job of the model (its pods are never created)."""
    labels = {children.UID_LABEL: owner.uid, children.COMPONENT_LABEL: "train", children.VERSION_LABEL: version}
    container = {"name": "train", "image": "busybox", "command": ["true"]}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": owner.namespace, "labels": labels},
            "spec": {"suspend": True, "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}  # fmt: skip


def test_a_deleted_model_is_settled_from_what_exists(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    owner = children.Owner("m", namespace, "uid-deletion-view")
    batch = kubernetes.client.BatchV1Api(api_client)
    kept = batch.create_namespaced_job(namespace, train_job(owner, "m-train-kept", "v-earlier"))
    kept_job = api_client.sanitize_for_serialization(kept)
    gone_job = train_job(owner, children.train_job_name("m", VERSION), VERSION)  # deleted while the watch was down
    gone_pod = {"metadata": {"name": f"{gone_job['metadata']['name']}-p", "labels": gone_job["metadata"]["labels"]},
                "status": {"phase": "Pending"}}  # fmt: skip
    consumer = Consumer("SecureModel", namespace, "m", owner.uid, VERSION)
    stale = Snapshot(
        owner=owner, generation=1, deleting=True, finalized=True, rotation=None, spec=SPEC, image="worker:dev",
        own_code=True, ledger=Ledger((Claim(consumer, 2.0, 1e-5, ClaimState.RESERVED, "t0", dispatched="t1"),)),
        refusal=None, plan=PLAN, calibration=Calibration(3.0, PLAN.sample_rate, PLAN.steps, 1.9, 1e-5, "prv"),
        calibration_error=None, jobs={"m-train-kept": kept_job, gone_job["metadata"]["name"]: gone_job},
        pods=(gone_pod,), deployment=None, service=None, pvc=None, results=None, secrets={}, now=datetime.now(UTC),
    )  # fmt: skip
    assert not decide_deletion(stale).settled
    assert Verb.RELEASE not in {action.verb for action in decide_deletion(stale).ledger}  # it waits on the stale pod

    stored = asyncio.run(with_stored_jobs_and_pods(SimpleNamespace(client=api_client), stale))  # type: ignore[arg-type]

    assert set(stored.jobs) == {"m-train-kept"} and stored.pods == ()
    decision = decide_deletion(stored)
    assert [action.verb for action in decision.ledger] == [Verb.RELEASE]  # its Job gone, no pod: the claim goes
    assert list(decision.delete_jobs) == ["m-train-kept"]
