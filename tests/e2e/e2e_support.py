"""What the end-to-end modules share: reading objects through kubectl, waiting for a condition or for an
object to be Ready (with the namespace's state printed when it is not), test namespaces, pods that
print a ``RESULT`` line, and the inference client pods, which run hack/demo-infer.py's client."""

from __future__ import annotations

import contextlib
import functools
import json
import uuid
from collections.abc import Iterator
from typing import Any

import polling
from test_cluster import REPO, apply, kubectl, logs, pod, wait_phase

# The operator's namespace (kubectl arguments) and its Deployment, as deploy/ installs them.
OPERATOR = ["-n", "securemodel-system"]
OPERATOR_DEPLOYMENT = "deployment/securemodel-operator"
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}


def get(namespace: str, kind: str, name: str) -> dict[str, Any]:
    return json.loads(kubectl("-n", namespace, "get", f"{kind}/{name}", "-o", "json").stdout)


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == kind), {})


# Polls less often than the integration tests: each check runs kubectl or reads the API server.
wait_until = functools.partial(polling.wait_until, interval=1.0)


def print_namespace(namespace: str, kind: str, name: str) -> None:
    """Print what explains a ``kind/name`` that is not Ready: the namespace's workloads, Secrets and volumes,
    the object, the namespace's Events, and the last lines of each of its pods' logs."""
    print(kubectl("-n", namespace, "get", "all,secret,pvc", check=False).stdout)
    print(kubectl("-n", namespace, "get", f"{kind}/{name}", "-o", "yaml", check=False).stdout)
    print(kubectl("-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False).stdout)
    for found in kubectl("-n", namespace, "get", "pods", "-o", "name", check=False).stdout.split():
        print(f"--- {found} ---")
        print(kubectl("-n", namespace, "logs", found, "--all-containers", "--tail=50", check=False).stdout)


def wait_ready(namespace: str, kind: str, name: str, timeout: float, what: str, interval: float = 1.0) -> dict[str, Any]:
    """``kind/name`` once its Ready condition is True. AssertionError, with its status, as soon as its phase is
    Failed, or after ``timeout`` s; either way, :func:`print_namespace` first."""

    def ready() -> dict[str, Any] | None:
        obj = get(namespace, kind, name)
        if (obj.get("status") or {}).get("phase") == "Failed":
            raise AssertionError(f"{kind}/{name} failed: {json.dumps(obj['status'], indent=1)}")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    try:
        return wait_until(ready, timeout, what, interval=interval)
    except AssertionError:
        print_namespace(namespace, kind, name)
        raise


@contextlib.contextmanager
def restricted_namespace(prefix: str, deletion_timeout: str = "60s") -> Iterator[str]:
    """A new namespace ``prefix-<random>`` that enforces Pod Security ``restricted``. On leaving, its models
    are deleted first, while the operator still runs to settle their claims; then its budgets, with the data
    steward's override for spent ones; then the namespace, without waiting."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    try:
        yield name
    finally:
        kubectl("-n", name, "delete", "securemodel", "--all", f"--timeout={deletion_timeout}", check=False)
        kubectl("-n", name, "annotate", "privacybudget", "--all", "securemodel.io/allow-delete-with-spend=true",
                check=False)  # fmt: skip
        kubectl("-n", name, "delete", "privacybudget", "--all", "--timeout=60s", check=False)
        kubectl("delete", "namespace", name, "--wait=false")


def pod_result(namespace: str, name: str, timeout: float) -> dict[str, Any]:
    """The JSON of the ``RESULT`` line the pod ``name`` printed, once it has Succeeded."""
    wait_phase(namespace, name, "Succeeded", timeout=timeout)
    line = next(line for line in logs(namespace, name).splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


CLIENT_CODE = "demo-infer"  # the ConfigMap of hack/demo-infer.py, mounted at /code as demo_infer.py

# argv: URL, model, the training source the model normalizes by, and the stems of bad certificates in /bad.
SERVED_CLIENT = r"""
import json, sys
import numpy as np
from demo_infer import evaluation_request, first_answer, infer, predicted_classes, refusal

url, model, training, bad = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
body, y = evaluation_request(training)
answer = first_answer(lambda: infer(url, model, body), 90)

def refused(certificate):
    error = refusal(lambda: infer(url, model, body, certificate))
    return None if error is None else f"{type(error).__name__}: {error}"

result = {
    "accuracy": float(np.mean(predicted_classes(answer) == y)),
    "examples": int(len(y)),
    "no_certificate": refused(None),
    **{stem: refused((f"/bad/{stem}.crt", f"/bad/{stem}.key")) for stem in bad},
}
print("RESULT " + json.dumps(result))
"""


def start_client(namespace: str, name: str, secret: str, code: str, *args: str, bad_secret: str | None = None) -> None:
    """Apply a pod ``name`` that runs Python ``code`` with ``args``, with the client Secret ``secret`` at /client
    (and ``bad_secret`` at /bad), and hack/demo-infer.py importable as ``demo_infer``."""
    code_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CLIENT_CODE},
                "data": {"demo_infer.py": (REPO / "hack" / "demo-infer.py").read_text(encoding="utf-8")}}  # fmt: skip
    volumes = [{"name": "client", "secret": {"secretName": secret}}, {"name": "code", "configMap": {"name": CLIENT_CODE}}]
    mounts = [{"name": "client", "mountPath": "/client", "readOnly": True}, {"name": "code", "mountPath": "/code", "readOnly": True}]
    if bad_secret:
        volumes.append({"name": "bad", "secret": {"secretName": bad_secret}})
        mounts.append({"name": "bad", "mountPath": "/bad", "readOnly": True})
    env = [{"name": "HOME", "value": "/tmp"}, {"name": "PYTHONPATH", "value": "/code"}]
    spec = pod(name, ["python", "-c", code, *args], volumes=volumes, securityContext=POD_SECURITY,
               container={"volumeMounts": mounts, "env": env, "imagePullPolicy": "IfNotPresent"})  # fmt: skip
    apply(namespace, code_map, spec)
