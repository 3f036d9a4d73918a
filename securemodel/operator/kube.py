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
from collections.abc import Callable, Mapping
from typing import Any, Final, cast

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


def serialize(client: kubernetes.client.ApiClient, obj: Any) -> dict[str, Any]:
    return client.sanitize_for_serialization(obj)


def _body(response: Any) -> dict[str, Any]:
    """The JSON of a response the client did not turn into its model classes (``_preload_content=False``).

    The operator reads objects as the API server's JSON, as kopf delivers them; building the client's
    typed objects and serializing them back cost about a tenth of the operator's CPU in a burst of models.
    """
    return cast(dict[str, Any], json.loads(response.data))


def _verbs(client: kubernetes.client.ApiClient, kind: str) -> tuple[Callable[..., Any], ...]:
    """(create, read, patch, replace, delete) of namespaced ``kind``."""
    core = kubernetes.client.CoreV1Api(client)
    apps = kubernetes.client.AppsV1Api(client)
    batch = kubernetes.client.BatchV1Api(client)
    net = kubernetes.client.NetworkingV1Api(client)
    table: dict[str, tuple[Any, str]] = {
        "PersistentVolumeClaim": (core, "persistent_volume_claim"),
        "Service": (core, "service"),
        "Secret": (core, "secret"),
        "ConfigMap": (core, "config_map"),
        "Pod": (core, "pod"),
        "Deployment": (apps, "deployment"),
        "Job": (batch, "job"),
        "NetworkPolicy": (net, "network_policy"),
    }
    api, noun = table[kind]
    return tuple(getattr(api, f"{verb}_namespaced_{noun}") for verb in ("create", "read", "patch", "replace", "delete"))


def apply(client: kubernetes.client.ApiClient, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Server-side apply ``obj`` as :data:`FIELD_MANAGER` (forcing: the operator owns what it sets).

    Where someone else's edit makes the merged object invalid (server-side apply keeps list items
    another manager added, e.g. a Service port renumbered by hand next to the operator's), the
    operator's fields are written with a merge patch instead, which replaces those lists whole.
    """
    _, _, patch, _, _ = _verbs(client, obj["kind"])
    meta = obj["metadata"]
    try:
        applied = patch(meta["name"], meta["namespace"], dict(obj), field_manager=FIELD_MANAGER, force=True,
                        _content_type=APPLY_PATCH, _preload_content=False)  # fmt: skip
    except kubernetes.client.ApiException as error:
        if error.status != 422:
            raise
        applied = patch(meta["name"], meta["namespace"], dict(obj), field_manager=FIELD_MANAGER,
                        _content_type=MERGE_PATCH, _preload_content=False)  # fmt: skip
    return _body(applied)


def create(client: kubernetes.client.ApiClient, obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """Create ``obj``; None if an object of that name already exists (nothing is overwritten)."""
    make, _, _, _, _ = _verbs(client, obj["kind"])
    try:
        return _body(make(obj["metadata"]["namespace"], dict(obj), field_manager=FIELD_MANAGER, _preload_content=False))
    except kubernetes.client.ApiException as error:
        if error.status == 409:
            return None
        raise


def replace(client: kubernetes.client.ApiClient, obj: Mapping[str, Any], resource_version: str) -> dict[str, Any]:
    """Replace the stored object with ``obj`` only if it is still at ``resource_version`` (else 409)."""
    _, _, _, put, _ = _verbs(client, obj["kind"])
    body = {**obj, "metadata": {**obj["metadata"], "resourceVersion": resource_version}}
    meta = body["metadata"]
    return _body(put(meta["name"], meta["namespace"], body, field_manager=FIELD_MANAGER, _preload_content=False))


def read(client: kubernetes.client.ApiClient, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object as stored now (a quorum read), or None."""
    _, get, _, _, _ = _verbs(client, kind)
    try:
        return _body(get(name, namespace, _preload_content=False))
    except kubernetes.client.ApiException as error:
        if error.status == 404:
            return None
        raise


def delete(client: kubernetes.client.ApiClient, kind: str, namespace: str, name: str, *, foreground: bool = False) -> None:
    """Delete the object if it exists (Foreground: its dependents go first)."""
    _, _, _, _, remove = _verbs(client, kind)
    with contextlib.suppress(kubernetes.client.ApiException):
        remove(name, namespace, propagation_policy="Foreground" if foreground else "Background")


def secret_named(client: kubernetes.client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret ``name`` as stored now, read with list (the operator's role has no get on Secrets)."""
    items = _body(kubernetes.client.CoreV1Api(client).list_namespaced_secret(
        namespace, field_selector=f"metadata.name={name}", _preload_content=False))["items"]  # fmt: skip
    return items[0] if items else None


def pods(client: kubernetes.client.ApiClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The pods matching ``selector`` as stored now (a quorum list)."""
    return list(_body(kubernetes.client.CoreV1Api(client).list_namespaced_pod(
        namespace, label_selector=selector, _preload_content=False))["items"])  # fmt: skip


def jobs(client: kubernetes.client.ApiClient, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The Jobs matching ``selector`` as stored now (a quorum list)."""
    return list(_body(kubernetes.client.BatchV1Api(client).list_namespaced_job(
        namespace, label_selector=selector, _preload_content=False))["items"])  # fmt: skip


def remove_finalizer(client: kubernetes.client.ApiClient, pod: Mapping[str, Any], finalizer: str) -> None:
    """Take ``finalizer`` off the pod, only if it is still where it was read (a JSON patch with a test)."""
    finalizers = list(pod["metadata"].get("finalizers") or ())
    if finalizer not in finalizers:
        return
    path = f"/metadata/finalizers/{finalizers.index(finalizer)}"
    ops = [{"op": "test", "path": path, "value": finalizer}, {"op": "remove", "path": path}]
    meta = pod["metadata"]
    try:
        kubernetes.client.CoreV1Api(client).patch_namespaced_pod(meta["name"], meta["namespace"], ops,
                                                                 _content_type=JSON_PATCH)  # fmt: skip
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
