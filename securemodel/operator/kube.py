"""The Kubernetes calls every reconciler shares: server-side apply with one field manager, and exact writes.

Blocking functions (call them with :func:`asyncio.to_thread`), one per verb, for the kinds the
operator owns. :func:`drifted` is the pure check that decides whether a child needs applying:
every field the operator sets must hold the value it set (fields the API server or others
add are ignored), so a Deployment scaled by hand or a Service edited is put back, and a child
that matches costs no call.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any, Final, cast
from urllib.parse import quote

import kubernetes

FIELD_MANAGER: Final = "securemodel-operator"
APPLY_PATCH: Final = "application/apply-patch+yaml"
MERGE_PATCH: Final = "application/merge-patch+json"
JSON_PATCH: Final = "application/json-patch+json"
# The parts of an object the operator decides; the rest (status, server metadata) is not compared.
DECIDED: Final = ("spec", "data", "type")


def indexed(body: Mapping[str, Any], *parts: str) -> dict[str, Any]:
    """What an index keeps of a watched object: its kind, its metadata less ``managedFields``, and ``parts``.

    The managed fields (the API server's record of which manager set which field, about as large
    as the spec again) are read by nothing in the operator, and an index holds every child of
    every model for the life of the process.
    """
    kept: dict[str, Any] = {part: body[part] for part in ("apiVersion", "kind", *parts) if part in body}
    if "metadata" in body:
        kept["metadata"] = {key: value for key, value in body["metadata"].items() if key != "managedFields"}
    return kept


def indexed_job(body: Mapping[str, Any]) -> dict[str, Any]:
    """What an index keeps of a Job: :func:`indexed` with its status, and of its spec only ``suspend``.

    The pod template, most of a Job, is written once when the Job is created and read by nothing
    in the operator: its Jobs are suspended or deleted, never patched for drift.
    """
    return {**indexed(body, "status"), "spec": {"suspend": (body.get("spec") or {}).get("suspend")}}


# What an index keeps of each other kind of child besides its kind and metadata: what the reconcilers decide from.
_INDEXED_PARTS: Final = {
    "Deployment": ("spec", "status"),
    "Service": ("spec",),
    "PersistentVolumeClaim": ("spec",),
    "NetworkPolicy": ("spec",),
    "ConfigMap": ("data",),
    "Secret": ("data", "type"),
}


def child_entry(kind: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """What the operator keeps of a child of ``kind`` it watched or wrote: in its indexes, and in a
    reconciler's record of its own writes until the index shows them
    (:class:`~securemodel.operator.recent_writes.RecentWrites`), so both views have one shape.

    A Job is :func:`indexed_job`; a Pod keeps its status and ``spec.nodeName``; the others :func:`indexed`
    with the parts of :data:`_INDEXED_PARTS`.
    """
    if kind == "Job":
        return indexed_job(body)
    if kind == "Pod":
        return {**indexed(body, "status"), "spec": {"nodeName": (body.get("spec") or {}).get("nodeName")}}
    return indexed(body, *_INDEXED_PARTS[kind])


def serialize(client: kubernetes.client.ApiClient, obj: Any) -> dict[str, Any]:
    return client.sanitize_for_serialization(obj)


# Where each namespaced kind the operator writes lives: (API prefix, resource).
_RESOURCES: Final = {
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims"),
    "Service": ("/api/v1", "services"),
    "Secret": ("/api/v1", "secrets"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Pod": ("/api/v1", "pods"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Job": ("/apis/batch/v1", "jobs"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
}


def _path(kind: str, namespace: str, name: str | None = None) -> str:
    prefix, resource = _RESOURCES[kind]
    return f"{prefix}/namespaces/{quote(namespace, safe='')}/{resource}" + (f"/{quote(name, safe='')}" if name else "")


def _request(
    client: kubernetes.client.ApiClient,
    method: str,
    path: str,
    *,
    query: Mapping[str, str] | None = None,
    body: Any = None,
    content_type: str = "application/json",
) -> dict[str, Any]:
    """One call to the API server with ``client``'s host, credentials and connection pool; the response's JSON.

    The objects go as the API server's JSON both ways: the client's typed API classes would validate and
    convert every body through its model classes, and importing them cost the operator about 30 MiB.
    Raises ``kubernetes.client.ApiException`` (with the status) for any answer but 2xx.
    """
    request = client.param_serialize(
        method,
        path,
        query_params=list((query or {}).items()),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = client.call_api(*request)
    response.read()
    if not 200 <= response.status <= 299:
        message = response.data.decode(errors="replace")
        raise kubernetes.client.ApiException.from_response(http_resp=response, body=message, data=None)
    return cast(dict[str, Any], json.loads(response.data))


def apply(client: kubernetes.client.ApiClient, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply ``obj`` as :data:`FIELD_MANAGER` (forcing: the operator owns what it sets).

    Where someone else's edit makes the merged object invalid (server-side apply keeps list items
    another manager added, e.g. a Service port renumbered by hand next to the operator's), the
    operator's fields are written with a merge patch instead, which replaces those lists whole.
    """
    meta = obj["metadata"]
    path = _path(obj["kind"], meta["namespace"], meta["name"])
    try:
        return _request(client, "PATCH", path, query={"fieldManager": FIELD_MANAGER, "force": "true"},
                        body=dict(obj), content_type=APPLY_PATCH)  # fmt: skip
    except kubernetes.client.ApiException as error:
        if error.status != 422:
            raise
    return merge_patch(client, obj["kind"], meta["namespace"], meta["name"], dict(obj))


def merge_patch(
    client: kubernetes.client.ApiClient, kind: str, namespace: str, name: str, patch: Mapping[str, Any]
) -> dict[str, Any]:
    """JSON merge patch ``patch`` onto the object, as :data:`FIELD_MANAGER`."""
    return _request(client, "PATCH", _path(kind, namespace, name), query={"fieldManager": FIELD_MANAGER},
                    body=dict(patch), content_type=MERGE_PATCH)  # fmt: skip


def create(client: kubernetes.client.ApiClient, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Create ``obj``; None if an object of that name already exists (nothing is overwritten)."""
    path = _path(obj["kind"], obj["metadata"]["namespace"])
    try:
        return _request(client, "POST", path, query={"fieldManager": FIELD_MANAGER}, body=dict(obj))
    except kubernetes.client.ApiException as error:
        if error.status == 409:
            return None
        raise


def replace(client: kubernetes.client.ApiClient, obj: Mapping[str, Any], resource_version: str) -> dict[str, Any]:
    """Replace the stored object with ``obj`` only if it is still at ``resource_version`` (else 409)."""
    body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": resource_version}}
    meta = body["metadata"]
    path = _path(obj["kind"], meta["namespace"], meta["name"])
    return _request(client, "PUT", path, query={"fieldManager": FIELD_MANAGER}, body=body)


def read(client: kubernetes.client.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as stored now (a quorum read), or None."""
    try:
        return _request(client, "GET", _path(kind, namespace, name))
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def delete(client: kubernetes.client.ApiClient, kind: str, namespace: str, name: str, *, foreground: bool = False) -> None:
    """Delete the object if it exists (Foreground: its dependents go first)."""
    policy = "Foreground" if foreground else "Background"
    with contextlib.suppress(kubernetes.client.ApiException):
        _request(client, "DELETE", _path(kind, namespace, name), query={"propagationPolicy": policy})


def _listed(client: kubernetes.client.ApiClient, kind: str, namespace: str, **query: str) -> list[dict[str, Any]]:
    return list(_request(client, "GET", _path(kind, namespace), query=query)["items"])


def secret_named(client: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret ``name`` as stored now, read with list (the operator's role has no get on Secrets)."""
    items = _listed(client, "Secret", namespace, fieldSelector=f"metadata.name={name}")
    return items[0] if items else None


def pods(client: kubernetes.client.ApiClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods matching ``selector`` as stored now (a quorum list)."""
    return _listed(client, "Pod", namespace, labelSelector=selector)


def jobs(client: kubernetes.client.ApiClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The Jobs matching ``selector`` as stored now (a quorum list)."""
    return _listed(client, "Job", namespace, labelSelector=selector)


def remove_finalizer(client: kubernetes.client.ApiClient, pod: Mapping[str, Any], finalizer: str) -> None:
    """Take ``finalizer`` off the pod, only if it is still where it was read (a JSON patch with a test)."""
    finalizers = list(pod["metadata"].get("finalizers") or ())
    if finalizer not in finalizers:
        return
    path = f"/metadata/finalizers/{finalizers.index(finalizer)}"
    ops = [{"op": "test", "path": path, "value": finalizer}, {"op": "remove", "path": path}]
    meta = pod["metadata"]
    try:
        _request(client, "PATCH", _path("Pod", meta["namespace"], meta["name"]), query={"fieldManager": FIELD_MANAGER},
                 body=ops, content_type=JSON_PATCH)
    except kubernetes.client.ApiException as error:
        if error.status not in (404, 409, 422):  # gone, or changed meanwhile: the next event retries
            raise


def contains(current: Any, wanted: Any) -> bool:
    """Whether every field of ``wanted`` holds the same value in ``current`` (lists item by item, same length)."""
    if isinstance(wanted, Mapping):
        return isinstance(current, Mapping) and all(contains(current.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(current, list)
            and len(current) == len(wanted)
            and all(contains(c, w) for c, w in zip(current, wanted, strict=True))
        )
    return current == wanted


def drifted(desired: Mapping[str, Any], observed: Mapping[str, Any] | None) -> bool:
    """Whether ``observed`` is missing or differs from ``desired`` in a field the operator sets."""
    if observed is None:
        return True
    meta, seen = desired["metadata"], observed.get("metadata") or {}
    if not contains(seen.get("labels") or {}, meta.get("labels") or {}):
        return True
    if not contains(seen.get("annotations") or {}, meta.get("annotations") or {}):
        return True
    return not all(contains(observed.get(part), desired[part]) for part in DECIDED if part in desired)


def merge_contains(current: Mapping[str, Any], patch: Mapping[str, Any]) -> bool:
    """Whether merging ``patch`` into ``current`` would change nothing (a ``None`` deletes: absent is equal)."""
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(current.get(key), Mapping):
            if not merge_contains(current[key], value):
                return False
        elif current.get(key) != value:
            return False
    return True
