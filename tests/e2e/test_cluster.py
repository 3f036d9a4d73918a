"""The local cluster is a real Kubernetes: pods from the project's image run on a real kubelet,
Services route and resolve, volumes bind, Secrets mount and Pod Security is enforced.

Everything goes through kubectl, as a user would see it."""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
KUBECONFIG = REPO / ".cluster" / "kubeconfig"
WORKER_IMAGE = "securemodel-worker:dev"
RESTRICTED_CONTAINER = {
    "securityContext": {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
    "imagePullPolicy": "Never",
}


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REPO / ".cluster" / "bin" / "kubectl"), "--kubeconfig", str(KUBECONFIG), *args],
        input=stdin, text=True, capture_output=True, check=check, timeout=300,
    )


def apply(namespace: str, *objects: dict) -> None:
    doc = {"apiVersion": "v1", "kind": "List", "items": list(objects)}
    kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(doc))


def pod(name: str, command: list[str], **spec: object) -> dict:
    container = {"name": "main", "image": WORKER_IMAGE, "command": command, **RESTRICTED_CONTAINER}
    container.update(spec.pop("container", {}))  # type: ignore[arg-type]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"restartPolicy": "Never", "containers": [container], **spec},
    }


def wait_phase(namespace: str, name: str, phase: str, timeout: float = 180) -> None:
    """Wait until the pod ends (Succeeded or Failed), then check it ended in `phase`."""
    deadline = time.monotonic() + timeout
    current = ""
    while time.monotonic() < deadline:
        current = kubectl("-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}").stdout
        if current in ("Succeeded", "Failed"):
            break
        time.sleep(0.5)
    assert current == phase, f"pod {name} is {current or 'not started'}, not {phase}: {kubectl('-n', namespace, 'logs', name, check=False).stdout}"


def logs(namespace: str, name: str) -> str:
    return kubectl("-n", namespace, "logs", name).stdout


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false")


def test_pod_from_worker_image_succeeds_and_logs(namespace: str) -> None:
    apply(namespace, pod("hello", ["python", "-c", "import securemodel, sys; print('hello from', sys.version_info[:2])"]))
    wait_phase(namespace, "hello", "Succeeded")
    assert "hello from (3, 11)" in logs(namespace, "hello")


def test_failing_command_gives_failed_phase_and_exit_code(namespace: str) -> None:
    apply(namespace, pod("boom", ["python", "-c", "raise SystemExit(3)"]))
    wait_phase(namespace, "boom", "Failed")
    status = json.loads(kubectl("-n", namespace, "get", "pod", "boom", "-o", "json").stdout)["status"]
    assert status["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 3


def test_service_is_reached_by_dns_name_from_another_pod(namespace: str) -> None:
    token = uuid.uuid4().hex
    server = pod("web", ["python", "-c", (
        "import http.server, os\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = os.environ['TOKEN'].encode()\n"
        "        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers()\n"
        "        self.wfile.write(body)\n"
        "http.server.HTTPServer(('', 8080), H).serve_forever()\n")],
        container={"env": [{"name": "TOKEN", "value": token}],
                   "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}})
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": server["spec"]["containers"]}}},
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}}
    apply(namespace, deployment, service)
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=180s")
    url = f"http://web.{namespace}.svc.cluster.local/"
    # kube-proxy programs a Service's rules shortly after its endpoints become ready: like any
    # client of a fresh Service, this one retries refused connections for a while.
    client = (
        "import time, urllib.request\n"
        "deadline = time.monotonic() + 60\n"
        "while True:\n"
        "    try:\n"
        f"        print(urllib.request.urlopen({url!r}, timeout=10).read().decode()); break\n"
        "    except OSError:\n"
        "        if time.monotonic() > deadline: raise\n"
        "        time.sleep(0.5)\n")
    apply(namespace, pod("client", ["python", "-c", client]))
    wait_phase(namespace, "client", "Succeeded")
    assert token in logs(namespace, "client")


def test_pvc_binds_dynamically_and_data_outlives_the_pod(namespace: str) -> None:
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
           "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}}
    volume = {"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
              "container": {"volumeMounts": [{"name": "data", "mountPath": "/data"}]}}
    token = uuid.uuid4().hex
    apply(namespace, pvc, pod("writer", ["python", "-c", f"open('/data/token', 'w').write({token!r})"], **volume))
    kubectl("-n", namespace, "wait", "pvc/data", "--for=jsonpath={.status.phase}=Bound", "--timeout=120s")
    wait_phase(namespace, "writer", "Succeeded")
    apply(namespace, pod("reader", ["python", "-c", "print(open('/data/token').read())"], **volume))
    wait_phase(namespace, "reader", "Succeeded")
    assert token in logs(namespace, "reader")


def test_secret_mounts_as_files_and_env(namespace: str) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
              "stringData": {"username": "alice", "password": "s3cret-value"}}
    reader = pod("reader", ["python", "-c", (
        "import os; files = sorted(f for f in os.listdir('/creds') if not f.startswith('..'));"
        "print(files, open('/creds/username').read(), os.environ['PASSWORD'])")],
        volumes=[{"name": "creds", "secret": {"secretName": "creds"}}],
        container={"volumeMounts": [{"name": "creds", "mountPath": "/creds", "readOnly": True}],
                   "env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}}]})
    apply(namespace, secret, reader)
    wait_phase(namespace, "reader", "Succeeded")
    assert logs(namespace, "reader").strip() == "['password', 'username'] alice s3cret-value"


def test_restricted_namespace_rejects_privileged_pod(namespace: str) -> None:
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    privileged = pod("root", ["true"], container={"securityContext": {"privileged": True}})
    result = kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(privileged), check=False)
    assert result.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in result.stderr
    assert "privileged" in result.stderr
    assert kubectl("-n", namespace, "get", "pods", "-o", "name").stdout.strip() == ""
