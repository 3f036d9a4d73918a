"""Mutual TLS, with real handshakes on 127.0.0.1: only clients holding a valid certificate from the
model's CA get an answer; everyone else's connection is closed before any request is served."""

from __future__ import annotations

import http.client
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from serving_support import Client, LinearModel, Pki, running_server, write_dir

from securemodel.crypto.pki import service_dns_names, tls_secret_data
from securemodel.serving.server import ServingServer
from securemodel.serving.tls import client_context

REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)
BATCH = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki: Pki) -> Iterator[ServingServer]:
    with running_server(LinearModel.random(), pki.server_volume().root) as server:
        yield server


def served_requests(server: ServingServer) -> float:
    return sum(
        sample.value for sample in server.metrics.requests.collect()[0].samples if sample.name.endswith("_total")
    )


def trusting_server(pki: Pki, cert_dir: Path | None = None) -> ssl.SSLContext:
    """A client context that trusts the server, presenting ``cert_dir``'s certificate if given."""
    context = ssl.create_default_context(cafile=pki.root / "server-tls" / "ca.crt")
    if cert_dir is not None:
        context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    return context


def assert_refused(server: ServingServer, context: ssl.SSLContext) -> None:
    before = served_requests(server)
    client = Client(server.port, context)
    with pytest.raises(REFUSED):
        client.infer(BATCH)
    client.close()
    assert served_requests(server) == before, "a request was answered on a refused connection"


def test_client_with_the_issued_certificate_gets_predictions(pki: Pki, server: ServingServer) -> None:
    client = Client(server.port, client_context(pki.client_dir("frontend")))
    status, body = client.infer(BATCH)
    client.close()
    assert status == 200
    expected = LinearModel.random().predict_proba(BATCH)
    probabilities = next(o for o in body["outputs"] if o["name"] == "probabilities")
    np.testing.assert_allclose(np.reshape(probabilities["data"], (2, 3)), expected, rtol=1e-6)


@pytest.mark.parametrize("name", service_dns_names("tumor", "clinic-a"))
def test_server_certificate_is_valid_for_every_service_name(pki: Pki, server: ServingServer, name: str) -> None:
    client = Client(server.port, client_context(pki.client_dir("frontend")), host=name)
    assert client.request("GET", "/v2/health/ready")[0] == 200
    client.close()


def test_client_refuses_a_server_under_another_name(pki: Pki, server: ServingServer) -> None:
    client = Client(server.port, client_context(pki.client_dir("frontend")), host="tumor.other-namespace.svc")
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        client.infer(BATCH)


def test_refused_without_a_client_certificate(pki: Pki, server: ServingServer) -> None:
    assert_refused(server, trusting_server(pki))


def test_tls12_is_refused_even_with_a_valid_certificate(pki: Pki, server: ServingServer) -> None:
    context = client_context(pki.client_dir("frontend"))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    assert_refused(server, context)


def test_no_connection_resumes_a_session(pki: Pki, server: ServingServer) -> None:
    """Every connection is a full handshake, so trust is checked again each time."""
    context = client_context(pki.client_dir("frontend"))
    first = Client(server.port, context)
    assert first.infer(BATCH)[0] == 200
    session = first.tls_session()
    first.close()
    second = Client(server.port, context, session=session)
    assert second.infer(BATCH)[0] == 200
    assert not second.session_reused()
    second.close()


def test_refused_with_a_certificate_from_another_ca(pki: Pki, server: ServingServer, tmp_path: Path) -> None:
    stranger = Pki(tmp_path).client_dir("frontend")
    assert_refused(server, trusting_server(pki, stranger))


def test_refused_with_an_expired_client_certificate(pki: Pki, server: ServingServer) -> None:
    expired = pki.client_dir("frontend", issued=pki.now - timedelta(hours=2))
    assert_refused(server, trusting_server(pki, expired))


def test_refused_with_the_server_certificate_as_client_certificate(
    pki: Pki, server: ServingServer, tmp_path: Path
) -> None:
    server_cert = write_dir(tmp_path / "server-as-client", tls_secret_data(pki.server_certificate(), pki.ca.cert_pem))
    assert_refused(server, trusting_server(pki, server_cert))


def test_plain_http_on_the_tls_port_gets_no_answer(server: ServingServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        connection.request("GET", "/v2/health/ready")
        connection.getresponse()
    connection.close()
