"""The operator's calls (securemodel.operator.kube) against the real API server: each verb, its refusals, and
what it returns, as the API server's JSON."""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from securemodel.operator import kube


def config_map(namespace: str, name: str, value: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace,
            "labels": {"app": "kube-calls"}}, "data": {"key": value}}  # fmt: skip


def test_create_read_replace_apply_and_delete(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    created = kube.create(api_client, config_map(namespace, "c", "one"))
    assert created is not None and created["data"] == {"key": "one"}
    assert kube.create(api_client, config_map(namespace, "c", "two")) is None  # exists: nothing overwritten
    assert kube.read(api_client, "ConfigMap", namespace, "c")["data"] == {"key": "one"}
    assert kube.read(api_client, "ConfigMap", namespace, "absent") is None

    version = created["metadata"]["resourceVersion"]
    assert kube.replace(api_client, config_map(namespace, "c", "three"), version)["data"] == {"key": "three"}
    with pytest.raises(kubernetes.client.ApiException) as stale:
        kube.replace(api_client, config_map(namespace, "c", "four"), version)
    assert stale.value.status == 409 and "modified" in stale.value.body

    applied = kube.apply(api_client, config_map(namespace, "c", "five"))
    assert applied["data"] == {"key": "five"}
    assert any(entry["manager"] == kube.FIELD_MANAGER and entry["operation"] == "Apply"
               for entry in applied["metadata"]["managedFields"])  # fmt: skip

    kube.delete(api_client, "ConfigMap", namespace, "c")
    kube.delete(api_client, "ConfigMap", namespace, "c")  # already gone: no error
    assert kube.read(api_client, "ConfigMap", namespace, "c") is None


def test_a_merge_patch_suspends_a_job_and_lists_find_it(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    container = {"name": "main", "image": "securemodel-worker:dev", "command": ["true"]}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "j", "namespace": namespace, "labels": {"app": "kube-calls"}},
           "spec": {"suspend": False, "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}}  # fmt: skip
    kube.create(api_client, {**job, "spec": {**job["spec"], "suspend": True}})
    assert kube.merge_patch(api_client, "Job", namespace, "j", {"spec": {"suspend": True}})["spec"]["suspend"] is True
    assert [found["metadata"]["name"] for found in kube.jobs(api_client, namespace, "app=kube-calls")] == ["j"]
    assert kube.jobs(api_client, namespace, "app=other") == []


def test_secrets_are_found_by_name_with_list(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": namespace},
              "type": "Opaque", "data": {"k": "dmFsdWU="}}  # fmt: skip
    kube.create(api_client, secret)
    assert kube.secret_named(api_client, namespace, "s")["data"] == {"k": "dmFsdWU="}
    assert kube.secret_named(api_client, namespace, "t") is None


def test_a_finalizer_comes_off_only_where_it_was_read(api_client: kubernetes.client.ApiClient, namespace: str) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": namespace, "labels": {"app": "kube-calls"},
                        "finalizers": ["example.com/a", "example.com/b"]},
           "spec": {"nodeName": "no-such-node", "containers": [{"name": "main", "image": "securemodel-worker:dev"}]}}  # fmt: skip
    read = kube.create(api_client, pod)
    assert read is not None
    kube.merge_patch(api_client, "Pod", namespace, "p", {"metadata": {"finalizers": ["example.com/b"]}})
    kube.remove_finalizer(api_client, read, "example.com/b")  # read at index 1; now at 0: the test op refuses
    assert kube.pods(api_client, namespace, "app=kube-calls")[0]["metadata"]["finalizers"] == ["example.com/b"]
    kube.remove_finalizer(api_client, kube.read(api_client, "Pod", namespace, "p"), "example.com/b")
    assert "finalizers" not in kube.read(api_client, "Pod", namespace, "p")["metadata"]
