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
from collections.abc import Iterator
from typing import Any

import pytest

from e2e_support import POD_SECURITY, get, pod_result, restricted_namespace, start_client, wait_ready
from test_cluster import REPO, apply, kubectl, pod, wait_phase

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "tables"
MODEL = "readmission"
CLIENT = "frontend"
ROWS = 5000  # the example's spec.data.samples
IDENTIFIERS = ("patient_id", "nhs_number", "name", "email", "phone")


def _patients() -> Any:
    spec = importlib.util.spec_from_file_location("patients", EXAMPLE / "patients.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


patients = _patients()


@pytest.fixture(scope="module")
def namespace(operator: None) -> Iterator[str]:
    with restricted_namespace("e2e-table") as name:
        yield name


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
    return wait_ready(namespace, "securemodel", MODEL, 600, "the table model to be Ready")


CLIENT_CODE = r"""
import json, sys
from demo_infer import call, first_answer
url, model, rows = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])

def column(name, datatype, values):
    return {"name": name, "shape": [len(values)], "datatype": datatype, "data": values}

features = [column("age", "FP32", [float(r["age"]) for r in rows]),
            *(column(c, "BYTES", [r[c] for r in rows]) for c in ("birth_date", "sex", "postcode"))]
identifiers = [column(c, "BYTES", [r[c] for r in rows]) for c in ("patient_id", "nhs_number", "name", "email", "phone")]
result = {
    "metadata": first_answer(lambda: call(url, f"/v2/models/{model}"), 90),
    "byName": call(url, f"/v2/models/{model}/infer", {"inputs": features}),
    "missing": call(url, f"/v2/models/{model}/infer", {"inputs": features[:2] + features[3:]}),
    "extra": call(url, f"/v2/models/{model}/infer", {"inputs": features + identifiers}),
    "inCells": call(url, f"/v2/models/{model}/infer",
                    {"inputs": features[:3] + [column("postcode", "BYTES", [r["email"] for r in rows])]}),
}
print("RESULT " + json.dumps(result))
"""


def test_the_table_model_is_served_by_column_name_and_no_identifier_leaks(
    served: dict[str, Any], namespace: str
) -> None:
    rows = patients.patients(ROWS)[:4]
    url = f"https://{MODEL}.{namespace}.svc:8443"
    start_client(namespace, "client", f"{MODEL}-client-{CLIENT}", CLIENT_CODE, url, MODEL, json.dumps(rows))
    result = pod_result(namespace, "client", 240)

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
