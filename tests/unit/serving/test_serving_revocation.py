"""Revocation, with real handshakes on 127.0.0.1: the server answers only the client certificates on
its allow-list, follows the mounted list without a restart, and refuses a client removed from the
list and a replaced certificate, though both are unexpired certificates of the model's CA."""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from serving_support import AllowListVolume, Client, LinearModel, Pki, running_server, wait_until, write_dir

from securemodel.crypto.pki import TLS_CERT, TLS_KEY
from securemodel.serving.server import ServingServer
from securemodel.serving.tls import client_context

BATCH = np.ones((2, 4), dtype=np.float32)
RELOAD_INTERVAL = 0.05
REFUSED_HANDSHAKE = "refused handshake"


class CountingModel(LinearModel):
    """Counts the batches that reach the model."""

    calls = 0

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        CountingModel.calls += 1
        return super().predict_proba(x)


def status(server: ServingServer, client_dir: Path) -> int | str:
    """The status of one infer request on a fresh connection with ``client_dir``'s certificate."""
    client = Client(server.port, client_context(client_dir))
    try:
        return client.infer(BATCH)[0]
    except (ssl.SSLError, ConnectionError):
        return REFUSED_HANDSHAKE
    finally:
        client.close()


def metric(server: ServingServer, name: str, **labels: str) -> float:
    return server.metrics.registry.get_sample_value(name, labels) or 0.0


def rejected_reloads(server: ServingServer) -> float:
    return metric(server, "securemodel_serving_allow_list_reloads_total", result="rejected")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def clients(pki: Pki) -> dict[str, Path]:
    return {name: pki.client_dir(name) for name in ("frontend", "backend")}


@pytest.fixture
def allow(tmp_path: Path, clients: dict[str, Path]) -> AllowListVolume:
    return AllowListVolume(tmp_path / "allow-list", {name: [d] for name, d in clients.items()})


@pytest.fixture
def server(pki: Pki, allow: AllowListVolume) -> Iterator[ServingServer]:
    volume = pki.server_volume()
    with running_server(
        CountingModel.random(), volume.root, allow_list=allow.path, reload_interval=RELOAD_INTERVAL
    ) as server:
        yield server


def test_a_client_removed_from_the_list_is_refused_though_its_certificate_is_valid(
    server: ServingServer, allow: AllowListVolume, clients: dict[str, Path]
) -> None:
    assert status(server, clients["frontend"]) == 200 and status(server, clients["backend"]) == 200
    kept_alive = Client(server.port, client_context(clients["frontend"]))
    assert kept_alive.infer(BATCH)[0] == 200

    allow.update({"backend": [clients["backend"]]})
    removed = time.monotonic()
    wait_until(lambda: status(server, clients["frontend"]) == 403, "the removed client to be refused")
    assert time.monotonic() - removed < 5  # the list is polled every RELOAD_INTERVAL

    # The connection opened while it was allowed is refused from its next request on, and closed.
    calls = CountingModel.calls
    code, body = kept_alive.infer(BATCH)
    assert code == 403 and body == {"error": "this client certificate is not allowed"}
    assert kept_alive.headers is not None and kept_alive.headers["Connection"] == "close"
    assert kept_alive.connection.sock is None
    assert CountingModel.calls == calls, "a refused request reached the model"
    assert status(server, clients["backend"]) == 200

    assert metric(server, "securemodel_serving_client_refused_total", client="frontend") >= 2
    assert metric(server, "securemodel_serving_client_refused_total", client="backend") == 0
    assert metric(server, "securemodel_serving_allow_list_clients") == 1
    assert metric(server, "securemodel_serving_allow_list_reloads_total", result="loaded") == 1

    allow.update({"frontend": [clients["frontend"]], "backend": [clients["backend"]]})  # listed again
    wait_until(lambda: status(server, clients["frontend"]) == 200, "the client listed again to be answered")


def test_a_replaced_certificate_is_refused_while_its_successor_works(
    server: ServingServer, allow: AllowListVolume, pki: Pki, clients: dict[str, Path]
) -> None:
    old = clients["frontend"]
    new = pki.client_dir("frontend")  # a forced rotation: same client, new key and serial
    assert status(server, old) == 200
    assert status(server, new) == 403  # not issued as far as the list knows

    allow.update({"frontend": [old, new], "backend": [clients["backend"]]})  # an overlap, if the operator wants one
    wait_until(lambda: status(server, new) == 200, "the new certificate to be answered")
    assert status(server, old) == 200

    allow.update({"frontend": [new], "backend": [clients["backend"]]})
    wait_until(lambda: status(server, old) == 403, "the old certificate to be refused")
    assert status(server, new) == 200


def test_a_certificate_is_not_accepted_under_another_clients_name(
    server: ServingServer, allow: AllowListVolume, clients: dict[str, Path]
) -> None:
    """A list giving frontend's serial to another name (a mistake, or a tampered list) admits neither."""
    listed = allow.path.read_text().replace('"frontend"', '"renamed"')
    assert listed.count('"renamed"') == 1
    allow.write(listed.encode())
    wait_until(
        lambda: metric(server, "securemodel_serving_allow_list_reloads_total", result="loaded") == 1,
        "the renamed entry to be in force",
    )
    assert status(server, clients["frontend"]) == 403
    assert status(server, clients["backend"]) == 200


def test_an_invalid_update_is_ignored_and_the_list_in_force_stays(
    server: ServingServer, allow: AllowListVolume, clients: dict[str, Path]
) -> None:
    allow.update({"backend": [clients["backend"]]})
    wait_until(lambda: status(server, clients["frontend"]) == 403, "the removed client to be refused")
    for broken in (b"", b"{", b'{"version": 2, "clients": []}', b'{"version": 1, "clients": [], "extra": 1}'):
        rejected = rejected_reloads(server)
        allow.write(broken)
        wait_until(lambda n=rejected: rejected_reloads(server) > n, "the broken update to be rejected")
        assert status(server, clients["frontend"]) == 403
        assert status(server, clients["backend"]) == 200


def test_an_empty_list_refuses_everyone_and_a_stranger_fails_the_handshake(
    server: ServingServer, allow: AllowListVolume, clients: dict[str, Path], tmp_path: Path
) -> None:
    allow.update({})
    wait_until(lambda: metric(server, "securemodel_serving_allow_list_clients") == 0, "the empty list")
    assert status(server, clients["frontend"]) == 403 and status(server, clients["backend"]) == 403
    # A certificate of another CA never gets as far as the list: the handshake fails.
    stranger = Pki(tmp_path / "stranger").client_dir("frontend")
    context = ssl.create_default_context(cafile=clients["frontend"] / "ca.crt")
    context.load_cert_chain(stranger / TLS_CERT, stranger / TLS_KEY)
    client = Client(server.port, context)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client.infer(BATCH)
    client.close()


def test_the_server_does_not_start_without_a_valid_list(pki: Pki, tmp_path: Path) -> None:
    volume = pki.server_volume()
    with pytest.raises(RuntimeError) as missing:
        with running_server(LinearModel.random(), volume.root, allow_list=tmp_path / "nowhere.json"):
            pass
    assert isinstance(missing.value.__cause__, FileNotFoundError)
    invalid = write_dir(tmp_path / "invalid", {"allow-list.json": b'{"version": 1}'}) / "allow-list.json"
    with pytest.raises(RuntimeError) as bad:
        with running_server(LinearModel.random(), volume.root, allow_list=invalid):
            pass
    assert "lacks clients" in str(bad.value.__cause__)
