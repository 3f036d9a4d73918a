"""What the operator's indexes keep of a child: everything it decides from, without the managed fields."""

import copy
import json
from typing import Any

import pytest

from securemodel.operator import kube
from securemodel.operator.kube import child_entry, drifted, indexed, indexed_job
from securemodel.operator.secure_model import children
from securemodel.operator.secure_model.jobs import job_view
from securemodel.operator.secure_model.spec import parse

OWNER = children.Owner("tumor", "clinic-a", "1234-uid")
SPEC = parse(
    {
        "model": {"architecture": "mlp", "params": {"hidden": [8]}},
        "data": {"source": "builtin://breast_cancer"},
        "privacy": {"budgetRef": "b", "epsilon": 2.0, "delta": 1e-5, "maxGradNorm": 1.0, "accountant": "prv"},
        "training": {"epochs": 2, "batchSize": 64, "learningRate": 0.1, "optimizer": "sgd", "seed": 3},
        "resources": {"gpus": 0, "cpu": "1", "memory": "2Gi"},
    }
)
RUN = children.Run(noise_multiplier=1.25, sample_rate=0.140969, steps=15)


def fields_v1(obj: Any) -> Any:
    """The shape of ``fieldsV1`` the API server records for ``obj`` (``f:`` per key, ``k:``/``v:`` per item)."""
    if isinstance(obj, dict):
        return {".": {}, **{f"f:{key}": fields_v1(value) for key, value in obj.items()}}
    if isinstance(obj, list):
        return {f"v:{json.dumps(item, sort_keys=True)}" if not isinstance(item, dict) else f"k:{{\"name\":\"{i}\"}}": fields_v1(item)
                for i, item in enumerate(obj)}  # fmt: skip
    return {}


def as_served(desired: dict[str, Any]) -> dict[str, Any]:
    """``desired`` as the watch delivers it after server-side apply: server metadata, managed fields, a status."""
    served = copy.deepcopy(desired)
    applied = {key: value for key, value in desired.items() if key not in ("apiVersion", "kind")}
    served["metadata"] |= {
        "uid": "5678-uid",
        "resourceVersion": "42",
        "creationTimestamp": "2026-11-21T10:00:00Z",
        "managedFields": [
            {"manager": "securemodel-operator", "operation": "Apply", "apiVersion": "batch/v1",
             "time": "2026-11-21T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields_v1(applied)},
            {"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "batch/v1",
             "time": "2026-11-21T10:00:01Z", "fieldsType": "FieldsV1", "subresource": "status",
             "fieldsV1": {"f:status": {"f:active": {}, "f:startTime": {}}}},
        ],  # fmt: skip
    }
    served["status"] = {"active": 1, "startTime": "2026-11-21T10:00:01Z"}
    return served


def test_an_indexed_job_keeps_what_the_reconciler_reads_and_drops_the_managed_fields() -> None:
    desired = children.train_job(OWNER, SPEC, SPEC.versions.training, RUN, "img")
    served = as_served(desired)
    kept = indexed(served, "spec", "status")
    assert "managedFields" not in kept["metadata"]
    assert kept["metadata"] == {k: v for k, v in served["metadata"].items() if k != "managedFields"}
    assert (kept["apiVersion"], kept["kind"], kept["spec"], kept["status"]) == (
        served["apiVersion"], served["kind"], served["spec"], served["status"])  # fmt: skip
    assert not drifted(desired, kept)
    assert "managedFields" in served["metadata"]  # the watched body is not modified
    assert len(json.dumps(kept)) < 0.7 * len(json.dumps(served))


def test_an_indexed_child_still_shows_drift() -> None:
    desired = children.train_job(OWNER, SPEC, SPEC.versions.training, RUN, "img")
    served = as_served(desired)
    served["metadata"]["labels"] = {}
    assert drifted(desired, indexed(served, "spec", "status"))


def test_only_the_named_parts_are_kept() -> None:
    secret = as_served(children.data_key_secret(OWNER, bytes(32)))
    assert set(indexed(secret, "data", "type")) == {"apiVersion", "kind", "metadata", "data", "type"}
    assert set(indexed(secret)) == {"apiVersion", "kind", "metadata"}


def test_an_indexed_job_keeps_what_its_view_reads_and_not_its_pod_template() -> None:
    served = as_served(children.train_job(OWNER, SPEC, SPEC.versions.training, RUN, "img"))
    served["status"] = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                     "message": "Job has reached the specified backoff limit"}]}  # fmt: skip
    for suspend in (None, True, False):
        served["spec"]["suspend"] = suspend
        kept = indexed_job(served)
        assert kept["spec"] == {"suspend": suspend} and kept["status"] == served["status"]
        assert kept["metadata"] == indexed(served)["metadata"]  # labels, uid and owners: what pods are matched by
        assert job_view(kept, []) == job_view(served, [])
    assert "template" in served["spec"]  # the watched body is not modified
    assert len(json.dumps(indexed_job(served))) < 0.15 * len(json.dumps(served))


@pytest.mark.parametrize("kind", sorted(kube._RESOURCES))
def test_every_kind_the_operator_writes_has_the_index_s_shape(kind: str) -> None:
    served = {"apiVersion": "v1", "kind": kind, "metadata": {"name": "a", "managedFields": [{"manager": "m"}]},
              "spec": {"nodeName": "node-1", "suspend": True, "replicas": 1}, "status": {"phase": "Running"},
              "data": {"k": "dg=="}, "type": "Opaque"}  # fmt: skip
    kept = child_entry(kind, served)
    assert kept["kind"] == kind and kept["metadata"] == {"name": "a"}
    assert set(kept) - {"apiVersion", "kind", "metadata"} <= {"spec", "status", "data", "type"}
    assert set(kept) & set(kube.DECIDED) or kind in ("Job", "Pod")  # what drift is decided from, where it is


def test_a_job_and_a_pod_keep_only_what_their_views_read() -> None:
    pod = as_served(children.train_job(OWNER, SPEC, SPEC.versions.training, RUN, "img")["spec"]["template"])
    pod |= {"kind": "Pod", "spec": {**pod["spec"], "nodeName": "node-1"}, "status": {"phase": "Pending"}}
    kept = child_entry("Pod", pod)
    assert kept["spec"] == {"nodeName": "node-1"} and kept["status"] == {"phase": "Pending"}
    served = as_served(children.train_job(OWNER, SPEC, SPEC.versions.training, RUN, "img"))
    job = child_entry("Job", served)
    assert "template" not in job["spec"] and job_view(job, []) == job_view(served, [])
