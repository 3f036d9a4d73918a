"""examples/tables on the real cluster: a synthetic hospital export written onto the claim, the
example applied as it ships, and the model it serves called by column name with the issued
client certificate. No identifier of the table reaches the serving pods' logs or audit trail,
the model's status, the namespace's Events, or the model's metadata.

The table comes from examples/tables/patients.py, run in a pod of the worker image (from a
ConfigMap) with the claim mounted; its rows are deterministic, so the test knows which
identifiers to look for.
"""

from __future__ import annotations

import importlib.util
import json
import secrets
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from test_cluster import REPO, apply, kubectl, logs, pod, wait_phase
from test_secure_model import condition, get, operator, wait_until  # noqa: F401 (the fixture)

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "tables"
MODEL = "readmission"
CLIENT = "frontend"
ROWS = 5000  # the example's spec.data.samples
IDENTIFIERS = ("patient_id", "nhs_number", "name", "email", "phone")
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "fsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}


def _patients() -> Any:
    spec = importlib.util.spec_from_file_location("patients", EXAMPLE / "patients.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


patients = _patients()


@pytest.fixture(scope="module")
def namespace(operator: None) -> Iterator[str]:  # noqa: F811 (uses the imported fixture)
    name = f"e2e-table-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    yield name
    kubectl("-n", name, "delete", "securemodel", "--all", "--timeout=60s", check=False)
    kubectl("-n", name, "annotate", "privacybudget", "--all", "securemodel.io/allow-delete-with-spend=true", check=False)
    kubectl("-n", name, "delete", "privacybudget", "--all", "--timeout=60s", check=False)
    kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def served(namespace: str) -> dict[str, Any]:
    """The export on the claim clinic-data, the pseudonym key's Secret, then examples/tables as it ships, Ready."""
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "clinic-data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}  # fmt: skip
    key = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "patient-pseudonym-key"},
           "stringData": {"key": secrets.token_hex(32)}}  # fmt: skip
    generator = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "patients-generator"},
                 "data": {"patients.py": (EXAMPLE / "patients.py").read_text()}}  # fmt: skip
    writer = pod(
        "write-export",
        ["python", "/generator/patients.py", "/data/exports/patients.csv", "--rows", str(ROWS)],
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "clinic-data"}},
                 {"name": "generator", "configMap": {"name": "patients-generator"}}],
        container={"volumeMounts": [{"name": "data", "mountPath": "/data"},
                                    {"name": "generator", "mountPath": "/generator", "readOnly": True}]},
        securityContext=POD_SECURITY,
    )  # fmt: skip
    apply(namespace, claim, key, generator, writer)
    wait_phase(namespace, "write-export", "Succeeded", timeout=180)
    kubectl("-n", namespace, "delete", "pod", "write-export", "--wait=true")  # the claim is ReadWriteOnce
    kubectl("-n", namespace, "apply", "-f", str(EXAMPLE / "securemodel-patient-table.yaml"))

    def ready() -> dict[str, Any] | None:
        obj = get(namespace, "securemodel", MODEL)
        if obj.get("status", {}).get("phase") == "Failed":
            raise AssertionError(f"the model failed: {json.dumps(obj['status'], indent=1)}")
        return obj if condition(obj, "Ready").get("status") == "True" else None

    try:
        return wait_until(ready, 600, "the table model to be Ready")
    except AssertionError:
        print(kubectl("-n", namespace, "get", "all,secret,pvc", check=False).stdout)
        print(kubectl("-n", namespace, "get", f"securemodel/{MODEL}", "-o", "yaml", check=False).stdout)
        raise


CLIENT_CODE = r"""
import json, socket, ssl, sys, time, urllib.error, urllib.request
url, model, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
context = ssl.create_default_context(cafile="/client/ca.crt")
context.load_cert_chain("/client/tls.crt", "/client/tls.key")

def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=20, context=context) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)

def column(name, datatype, values):
    return {"name": name, "shape": [len(values)], "datatype": datatype, "data": values}

features = [column("age", "FP32", [float(r["age"]) for r in rows]),
            *(column(c, "BYTES", [r[c] for r in rows]) for c in ("birth_date", "sex", "postcode"))]
identifiers = [column(c, "BYTES", [r[c] for r in rows]) for c in ("patient_id", "nhs_number", "name", "email", "phone")]
deadline = time.monotonic() + 90
while True:  # a fresh Service is routed shortly after its endpoints are ready
    try:
        metadata = call("GET", f"/v2/models/{model}"); break
    except (ConnectionRefusedError, socket.timeout, urllib.error.URLError) as error:
        if time.monotonic() > deadline or isinstance(getattr(error, "reason", None), ssl.SSLError):
            raise
        time.sleep(1)
result = {
    "metadata": metadata,
    "byName": call("POST", f"/v2/models/{model}/infer", {"inputs": features}),
    "missing": call("POST", f"/v2/models/{model}/infer", {"inputs": features[:2] + features[3:]}),
    "extra": call("POST", f"/v2/models/{model}/infer", {"inputs": features + identifiers}),
    "inCells": call("POST", f"/v2/models/{model}/infer",
                    {"inputs": features[:3] + [column("postcode", "BYTES", [r["email"] for r in rows])]}),
}
print("RESULT " + json.dumps(result))
"""


def test_the_table_model_is_served_by_column_name_and_no_identifier_leaks(
    served: dict[str, Any], namespace: str
) -> None:
    rows = patients.patients(ROWS)[:4]
    client = pod(
        "client",
        ["python", "-c", CLIENT_CODE, f"https://{MODEL}.{namespace}.svc:8443", MODEL, json.dumps(rows)],
        volumes=[{"name": "client", "secret": {"secretName": f"{MODEL}-client-{CLIENT}"}}],
        container={"volumeMounts": [{"name": "client", "mountPath": "/client", "readOnly": True}],
                   "env": [{"name": "HOME", "value": "/tmp"}]},
        securityContext=POD_SECURITY,
    )  # fmt: skip
    apply(namespace, client)
    wait_phase(namespace, "client", "Succeeded", timeout=240)
    line = next(line for line in logs(namespace, "client").splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))

    status, metadata = result["metadata"]
    assert status == 200
    assert metadata["inputs"] == [
        {"name": "age", "datatype": "FP32", "shape": [-1]},
        {"name": "birth_date", "datatype": "BYTES", "shape": [-1]},
        {"name": "sex", "datatype": "BYTES", "shape": [-1]},
        {"name": "postcode", "datatype": "BYTES", "shape": [-1]},
    ]
    status, answer = result["byName"]
    assert status == 200, answer
    probabilities = next(o for o in answer["outputs"] if o["name"] == "probabilities")
    assert probabilities["shape"] == [len(rows), 2]
    assert result["missing"][0] == 400 and result["missing"][1]["error"].startswith("missing input 'sex'")
    assert result["extra"][0] == 400 and result["extra"][1]["error"].startswith("unexpected input 'email'")
    assert result["inCells"][0] == 400
    assert result["inCells"][1]["error"].startswith("column 'postcode', row 1: not one of the 4 declared categories")

    selector = f"securemodel.io/model={MODEL},securemodel.io/component=serve"
    serving = json.loads(kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout)["items"]
    assert serving, "no serving pod"
    audit = "".join(kubectl("-n", namespace, "logs", p["metadata"]["name"]).stdout for p in serving)
    assert sum('"endpoint":"infer"' in line for line in audit.splitlines()) >= 4, "the requests are audited"
    seen = {
        "serving logs and audit": audit,
        "status": json.dumps(get(namespace, "securemodel", MODEL).get("status")),
        "events": kubectl("-n", namespace, "get", "events", "-o", "json").stdout,
        "metadata": json.dumps(metadata),
        "errors": json.dumps([result[k][1]["error"] for k in ("missing", "inCells")]),
    }
    identifiers = [row[c] for row in rows for c in IDENTIFIERS]
    leaked = {(where, i) for where, text in seen.items() for i in identifiers if i.casefold() in text.casefold()}
    assert leaked == set()
