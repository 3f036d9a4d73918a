"""A model trained on a table is served by column name over real mutual TLS: one OIP tensor per
feature, encoded by the code training ran; a missing or extra column is a 400 naming it; and no
identifier a request carries reaches the worker's logs, audit trail, metrics or metadata."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from serving_support import MODEL, Client, Pki, plain_get, running_server
from test_serving_worker import BINDING, VERSION, bound, free_port, wait_ready

from securemodel.compression import compress_state
from securemodel.crypto.artifacts import new_data_key, write_artifact
from securemodel.data.loading import Dataset, load_dataset
from securemodel.data.masking import Masking
from securemodel.data.tables import TableSchema
from securemodel.models import ModelRecord, ModelSpec, build_model, dump_compressed, load_predictor
from securemodel.serving.tls import client_context
from securemodel.workers.serve import MODEL_KIND

pytest.importorskip("pyarrow")
torch.set_num_threads(1)  # the unit tests share two cores with everything else

HERE = Path(__file__).parent
REPO = HERE.parents[2]
INFER = f"/v2/models/{MODEL}/infer"
ROWS = 40
IDENTIFIERS = ("patient_id", "nhs_number", "name", "email", "phone")

# The schema and masking of examples/tables/securemodel-patient-table.yaml.
EXAMPLE = REPO / "examples" / "tables" / "securemodel-patient-table.yaml"
SCHEMA_SPEC = {
    "label": {"column": "readmitted", "classes": ["no", "yes"]},
    "features": [
        {"name": "age", "type": "numeric", "min": 0, "max": 110},
        {"name": "birth_date", "type": "numeric", "min": 1900, "max": 2030},
        {"name": "sex", "type": "categorical", "categories": ["F", "M", "X"]},
        {"name": "postcode", "type": "categorical", "categories": ["SW1", "EC1", "M14", "LS6"]},
    ],
}
MASKING_SPEC = {
    "drop": ["name", "email", "phone"],
    "pseudonymize": ["patient_id", "nhs_number"],
    "keySecretRef": {"name": "patient-pseudonym-key", "key": "key"},
    "generalize": [
        {"column": "birth_date", "date": "year"},
        {"column": "postcode", "prefix": 3},
        {"column": "admitted", "date": "month"},
    ],
    "redact": ["notes"],
    "phoneRegions": ["GB"],
}
COLUMNS_METADATA = [
    {"name": "age", "datatype": "FP32", "shape": [-1]},
    {"name": "birth_date", "datatype": "BYTES", "shape": [-1]},
    {"name": "sex", "datatype": "BYTES", "shape": [-1]},
    {"name": "postcode", "datatype": "BYTES", "shape": [-1]},
]


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("patients", REPO / "examples" / "tables" / "patients.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


patients = _generator()


def by_name(rows: list[dict[str, str]], **override: Any) -> dict[str, Any]:
    """An OIP request for ``rows`` as KServe's tabular examples send it: one tensor per feature column."""
    inputs = [
        {"name": "age", "shape": [len(rows)], "datatype": "FP32", "data": [float(r["age"]) for r in rows]},
        *(
            {"name": c, "shape": [len(rows)], "datatype": "BYTES", "data": [r[c] for r in rows]}
            for c in ("birth_date", "sex", "postcode")
        ),
    ]
    return {"inputs": inputs, **override}


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, str]], Dataset, bytes]:
    """The synthetic patient table, the dataset training reads from it, and a compressed table model's payload."""
    root = tmp_path_factory.mktemp("claim")
    rows = patients.write_csv(root / "exports" / "patients.csv", ROWS, seed=3)
    data = load_dataset(
        "pvc://clinic-data/exports/patients.csv",
        data_root=root,
        samples=ROWS,
        schema=TableSchema.from_spec(SCHEMA_SPEC),
        masking=Masking.from_spec(MASKING_SPEC),
    )
    spec = ModelSpec("mlp", params={"hidden": [8]})
    torch.manual_seed(0)
    module = build_model(spec, data.input_shape, data.num_classes)
    record = ModelRecord.from_module(spec, module, data.input_shape, data.num_classes, None, table=data.encoding)
    return rows, data, dump_compressed(record, compress_state(record.state, 0.5, "int8"))


def test_the_schema_and_masking_here_are_the_examples() -> None:
    import yaml

    documents = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] == "SecureModel"]
    assert documents[0]["spec"]["data"]["schema"] == SCHEMA_SPEC
    assert documents[0]["spec"]["data"]["masking"] == MASKING_SPEC
    assert list(patients.COLUMNS) == [
        "patient_id", "nhs_number", "name", "email", "phone", "age", "birth_date", "sex",
        "postcode", "admitted", "notes", "readmitted",
    ]  # fmt: skip


def test_rows_by_column_name_get_the_encoding_training_gave_them(tmp_path: Path, table: Any) -> None:
    rows, data, payload = table
    predictor = load_predictor(payload, MODEL)
    pki = Pki(tmp_path)
    with running_server(predictor, pki.server_volume().root, version=VERSION) as server:
        client = Client(server.port, client_context(pki.client_dir("frontend")))
        status, metadata = client.request("GET", f"/v2/models/{MODEL}")
        assert status == 200 and metadata["inputs"] == COLUMNS_METADATA
        status, body = client.request("POST", INFER, by_name(rows[:5], id="r1"))
        assert status == 200, body
        probabilities = np.array(body["outputs"][0]["data"], dtype=np.float32).reshape(5, 2)
        # The training rows, encoded by load_dataset from the CSV, give the same answers.
        assert np.allclose(probabilities, predictor.predict_proba(data.x_train[:5]), atol=1e-6)
        assert body["outputs"][1]["data"] == probabilities.argmax(axis=1).tolist()

        # KServe's [batch, 1] tensors and integer ages are the same request.
        request = by_name(rows[:5])
        for tensor in request["inputs"]:
            tensor["shape"] = [5, 1]
        request["inputs"][0].update(datatype="INT64", data=[[int(r["age"])] for r in rows[:5]])
        status, again = client.request("POST", INFER, request)
        assert status == 200 and again["outputs"][0]["data"] == body["outputs"][0]["data"]
        client.close()


def _without(request: dict[str, Any], column: str) -> dict[str, Any]:
    return {"inputs": [t for t in request["inputs"] if t["name"] != column]}


def _changed(request: dict[str, Any], column: str, **tensor: Any) -> dict[str, Any]:
    return {"inputs": [{**t, **tensor} if t["name"] == column else t for t in request["inputs"]]}


def test_requests_that_do_not_fit_the_columns_are_400s_naming_them(tmp_path: Path, table: Any) -> None:
    rows, _, payload = table
    good = by_name(rows[:2])
    extra = {"name": "name", "shape": [2], "datatype": "BYTES", "data": [r["name"] for r in rows[:2]]}
    cases = [
        (_without(good, "sex"), "missing input 'sex'; this model takes ['age', 'birth_date', 'sex', 'postcode']"),
        ({"inputs": [*good["inputs"], extra]}, "unexpected input 'name'"),
        ({"inputs": [*good["inputs"], good["inputs"][1]]}, "input 'birth_date' is given twice"),
        ({"inputs": [{"name": "input", "shape": [2, 9], "datatype": "FP32", "data": [0.0] * 18}]},
         "unexpected input 'input'"),  # fmt: skip
        ({"inputs": [{"shape": [2]}]}, "every input needs a 'name'"),
        ({"inputs": "age"}, "'inputs' must be a list of tensors, one per column: age, birth_date, sex, postcode"),
        (_changed(good, "age", shape=[2, 2]), "input 'age': shape [2, 2] is not [batch] or [batch, 1]"),
        (_changed(good, "age", shape=[0], data=[]), "input 'age': batch size 0 is outside 1..1024"),
        (_changed(good, "age", datatype="STRING"), "input 'age': unsupported datatype 'STRING'"),
        (_changed(good, "age", datatype="INT64", data=[1.5, 2]), "input 'age': input 'data' must hold only integers"),
        (_changed(good, "sex", data=[1, 2]), "input 'sex': BYTES data must hold only strings"),
        (_changed(good, "sex", data=["F"]), "input 'sex': data has 1 elements, shape [2] needs 2"),
        (_changed(good, "sex", shape=[1], data=["F"]), "inputs must all hold the same number of rows; got lengths"),
        (_changed(good, "sex", data=["F", "Q"]), "column 'sex', row 2: not one of the 3 declared categories"),
        (_changed(good, "sex", data=["F", None]), "column 'sex', row 2: missing value"),
        (_changed(good, "postcode", data=["SW1A 1AA", "N1 9GU"]), "column 'postcode', row 2: not one of the 4"),
        (_changed(good, "birth_date", data=["1970-01-01", "soon"]), "column 'birth_date', row 2: not an ISO 8601 date"),
        (_changed(good, "age", datatype="BYTES", data=["40", "old"]), "column 'age', row 2: not a number"),
    ]
    pki = Pki(tmp_path)
    with running_server(load_predictor(payload, MODEL), pki.server_volume().root) as server:
        client = Client(server.port, client_context(pki.client_dir("frontend")))
        for request, message in cases:
            status, body = client.request("POST", INFER, request)
            assert (status, body["error"][: len(message)]) == (400, message), request
        assert client.request("POST", INFER, good)[0] == 200
        client.close()


# The worker, with the worker image's own model loader (torch), logging everything it would.
WORKER = """
import argparse, logging, sys
logging.basicConfig(level=logging.DEBUG)
from securemodel.models import load_predictor
from securemodel.workers.serve import add_serve_arguments, serve_artifact
parser = argparse.ArgumentParser()
add_serve_arguments(parser)
serve_artifact(parser.parse_args(sys.argv[1:]), load_predictor)
"""


def test_no_identifier_of_a_request_reaches_logs_audit_metrics_or_metadata(tmp_path: Path, table: Any) -> None:
    rows, _, payload = table
    key = new_data_key()
    key_file = tmp_path / "data-key" / "key"
    key_file.parent.mkdir()
    key_file.write_bytes(key)
    artifact = tmp_path / "model.smaf"
    digest = write_artifact(artifact, payload, key, kind=MODEL_KIND, binding=BINDING)
    pki = Pki(tmp_path)
    port, metrics_port = free_port(), free_port()
    argv = [*bound(artifact, digest), f"--data-key-file={key_file}", f"--tls-dir={pki.server_volume().root}",
            f"--model-name={MODEL}", f"--port={port}", f"--metrics-port={metrics_port}", "--drain-seconds=0"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    process = subprocess.Popen([sys.executable, "-c", WORKER, *argv], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    sample = rows[:3]
    identifiers = [r[c] for r in sample for c in IDENTIFIERS]
    # Every place a client could put an identifier: extra columns, feature cells, the request id.
    requests = [
        by_name(sample, id=sample[0]["email"]),
        {"inputs": [*by_name(sample)["inputs"],
                    *({"name": c, "shape": [3], "datatype": "BYTES", "data": [r[c] for r in sample]}
                      for c in IDENTIFIERS)]},  # fmt: skip
        _changed(by_name(sample), "postcode", data=[r["email"] for r in sample]),
        _changed(by_name(sample), "sex", data=[r["name"] for r in sample]),
        _changed(by_name(sample), "birth_date", data=[r["phone"] for r in sample]),
        _changed(by_name(sample), "age", datatype="BYTES", data=[r["nhs_number"] for r in sample]),
        _changed(by_name(sample), "age", datatype="BYTES", data=[r["patient_id"] for r in sample]),
        {"inputs": by_name(sample)["inputs"][:3]},
    ]
    try:
        wait_ready(metrics_port, process)
        client = Client(port, client_context(pki.client_dir("frontend")))
        status, metadata = client.request("GET", f"/v2/models/{MODEL}")
        assert status == 200 and metadata["inputs"] == COLUMNS_METADATA
        answers = [client.request("POST", INFER, request) for request in requests]
        client.close()
        metrics = plain_get(metrics_port, "/metrics")[1].decode()
        process.send_signal(signal.SIGTERM)
        audit, logs = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, logs.decode(errors="replace")
    assert [status for status, _ in answers] == [200, 400, 400, 400, 400, 400, 400, 400]
    assert answers[0][1]["id"] == sample[0]["email"], "the id goes back to its own client only"
    assert answers[1][1]["error"].startswith("unexpected input 'email'")
    lines = [json.loads(line) for line in audit.decode().splitlines()]
    assert [line["status"] for line in lines if line["endpoint"] == "infer"] == [200, *[400] * 7]
    assert 'securemodel_serving_requests_total{code="400",endpoint="infer"} 7.0' in metrics
    # The 400s name the column and the row, never the cell.
    seen = {
        "logs": logs.decode(errors="replace"),
        "audit": audit.decode(),
        "metrics": metrics,
        "metadata": json.dumps(metadata),
        "errors": json.dumps([body["error"] for _, body in answers[2:]]),
    }
    leaked = {(where, i) for where, text in seen.items() for i in identifiers if i.casefold() in text.casefold()}
    assert leaked == set()
