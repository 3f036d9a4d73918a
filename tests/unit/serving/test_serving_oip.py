"""The Open Inference Protocol v2 REST API as a client sees it over mutual TLS, the probe port that
kubelet uses, and the Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_support import MODEL, Client, LinearModel, Pki, SecretVolume, plain_get, running_server

from securemodel.crypto.pki import tls_secret_data
from securemodel.serving.server import ServingServer
from securemodel.serving.tls import client_context

MODEL_URL = f"/v2/models/{MODEL}"
VERSION = "v1f2e3d4c"
BATCH = np.linspace(-2, 2, 20, dtype=np.float32).reshape(5, 4)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[ServingServer]:
    with running_server(LinearModel.random(), pki.server_volume().root, version=VERSION) as server:
        yield server


@pytest.fixture
def client(pki: Pki, server: ServingServer) -> Iterator[Client]:
    client = Client(server.port, client_context(pki.client_dir("frontend")))
    yield client
    client.close()


def tensor(**overrides: Any) -> dict[str, Any]:
    base = {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [0.5] * 8}
    return {"inputs": [{**base, **overrides}]}


def test_server_metadata_and_health(client: Client) -> None:
    status, body = client.request("GET", "/v2")
    assert status == 200 and body["name"] == "securemodel" and body["extensions"] == []
    assert client.request("GET", "/v2/health/live") == (200, None)
    assert client.request("GET", "/v2/health/ready") == (200, None)
    assert client.request("GET", f"{MODEL_URL}/ready") == (200, None)


def test_model_metadata_describes_input_and_outputs(client: Client) -> None:
    status, body = client.request("GET", MODEL_URL)
    assert status == 200
    assert body["name"] == MODEL and body["versions"] == [VERSION]
    assert body["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert body["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "predicted_class", "datatype": "INT64", "shape": [-1]},
    ]


def test_infer_returns_probabilities_and_classes(client: Client) -> None:
    body = {"id": "req-7", "inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP64", "data": BATCH.tolist()}]}
    status, response = client.request("POST", f"{MODEL_URL}/infer", body)
    assert status == 200
    assert response["model_name"] == MODEL and response["id"] == "req-7"
    assert response["model_version"] == VERSION  # which version answered, while a new one rolls out
    outputs = {o["name"]: o for o in response["outputs"]}
    expected = LinearModel.random().predict_proba(BATCH)
    assert outputs["probabilities"]["shape"] == [5, 3] and outputs["probabilities"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(outputs["probabilities"]["data"], (5, 3)), expected, rtol=1e-6)
    assert outputs["predicted_class"] == {
        "name": "predicted_class",
        "shape": [5],
        "datatype": "INT64",
        "data": expected.argmax(axis=1).tolist(),
    }


def test_integer_input_and_requested_outputs(client: Client) -> None:
    body = tensor(datatype="INT32", data=[[1, 2, 3, 4], [-4, -3, -2, -1]])
    body["outputs"] = [{"name": "predicted_class"}]
    status, response = client.request("POST", f"{MODEL_URL}/infer", body)
    assert status == 200
    expected = LinearModel.random().predict_proba(np.array([[1, 2, 3, 4], [-4, -3, -2, -1]], dtype=np.float32))
    assert [o["name"] for o in response["outputs"]] == ["predicted_class"]
    assert response["outputs"][0]["data"] == expected.argmax(axis=1).tolist()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (tensor(shape=[2, 5], data=[0.5] * 10), "does not match the model's [batch, 4]"),
        (tensor(shape=[0, 4], data=[]), "batch size 0 is outside 1..1024"),
        (tensor(shape=[1025, 4], data=[0.0] * 4100), "batch size 1025 is outside"),
        (tensor(data=[0.5] * 7), "input data has 7 elements, shape [2, 4] needs 8"),
        (tensor(datatype="BYTES"), "unsupported datatype 'BYTES'"),
        (tensor(datatype="INT8", data=[1.5] * 8), "must hold only integers for datatype INT8"),
        (tensor(datatype="INT8", data=[300] * 8), "out of range for datatype INT8"),
        (tensor(data=["0.5"] * 8), "must hold only numbers"),
        (tensor(data=[[0.5, 0.5], [0.5]]), "ragged"),
        (tensor(datatype="FP64", data=[1e300] * 8), "out of FP32 range"),
        (tensor(name="pixels"), "unexpected input 'pixels'"),
        ({"inputs": []}, "'inputs' must be a list of one tensor"),
        ({"inputs": tensor()["inputs"], "outputs": [{"name": "logits"}]}, "'outputs' must name outputs"),
        ({"id": 7, **tensor()}, "'id' must be a string"),
        ([1, 2], "must be a JSON object"),
    ],
)
def test_invalid_requests_get_a_400_with_the_reason(client: Client, body: Any, message: str) -> None:
    status, response = client.request("POST", f"{MODEL_URL}/infer", body)
    assert status == 400
    assert message in response["error"]


def test_malformed_json_and_non_finite_values_are_400(client: Client) -> None:
    assert client.request("POST", f"{MODEL_URL}/infer", b"{not json")[0] == 400
    nan = b'{"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [NaN, 1, 2, 3]}]}'
    status, response = client.request("POST", f"{MODEL_URL}/infer", nan)
    assert status == 400 and "NaN or infinite" in response["error"]


def test_unknown_model_and_path_are_404(client: Client) -> None:
    status, response = client.request("POST", "/v2/models/other/infer", tensor())
    assert status == 404 and "unknown model 'other'" in response["error"]
    assert client.request("GET", "/v2/models/other")[0] == 404
    assert client.request("GET", "/v1/models")[0] == 404
    assert client.request("GET", f"{MODEL_URL}/infer")[0] == 405


def test_probe_port_serves_health_without_client_certificates_and_nothing_of_the_model(server: ServingServer) -> None:
    assert plain_get(server.metrics_port, "/v2/health/live") == (200, b"")
    assert plain_get(server.metrics_port, "/v2/health/ready") == (200, b"")
    assert plain_get(server.metrics_port, MODEL_URL)[0] == 404
    assert plain_get(server.metrics_port, "/v2")[0] == 404


def test_metrics_count_requests_by_endpoint_and_code(pki: Pki, tmp_path: Path) -> None:
    with running_server(LinearModel.random(), pki.server_volume(tmp_path.name).root) as server:
        client = Client(server.port, client_context(pki.client_dir("frontend")))
        for _ in range(3):
            assert client.infer(BATCH)[0] == 200
        assert client.request("POST", f"{MODEL_URL}/infer", tensor(datatype="BYTES"))[0] == 400
        assert client.request("GET", "/v2/models/other")[0] == 404
        assert client.request("GET", "/nowhere")[0] == 404
        client.close()
        status, text = plain_get(server.metrics_port, "/metrics")
    assert status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert value("securemodel_serving_requests_total", endpoint="infer", code="200") == 3
    assert value("securemodel_serving_requests_total", endpoint="infer", code="400") == 1
    assert value("securemodel_serving_requests_total", endpoint="model_metadata", code="404") == 1
    assert value("securemodel_serving_requests_total", endpoint="unmatched", code="404") == 1
    assert value("securemodel_serving_errors_total", **{"endpoint": "infer", "class": "client"}) == 1
    assert value("securemodel_serving_request_duration_seconds_count", endpoint="infer") == 4
    assert value("securemodel_serving_certificate_expiry_timestamp_seconds") == server.tls.not_after.timestamp()


def test_not_ready_while_the_server_certificate_is_expired(pki: Pki, tmp_path: Path) -> None:
    old = Pki(tmp_path, now=pki.now - timedelta(hours=2))
    volume = SecretVolume(tmp_path / "expired-tls", tls_secret_data(old.server_certificate(), old.ca.cert_pem))
    with running_server(LinearModel.random(), volume.root) as server:
        assert plain_get(server.metrics_port, "/v2/health/live")[0] == 200
        assert plain_get(server.metrics_port, "/v2/health/ready")[0] == 400
