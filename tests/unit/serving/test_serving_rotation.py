"""Certificates replaced in the mounted Secret are picked up without a restart and without a failed
request, while clients keep sending; a broken update is ignored; a replaced CA takes effect for
every new connection; the operator's CA rollover refuses no client."""

from __future__ import annotations

import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from serving_support import MODEL, NAMESPACE, Client, LinearModel, Pki, SecretVolume, running_server, wait_until, write_dir

from securemodel.crypto.pki import (
    CA_CERT,
    TLS_CERT,
    TLS_KEY,
    CertifiedKey,
    issue_server_certificate,
    issued_by,
    new_ca,
    service_dns_names,
    tls_secret_data,
)
from securemodel.operator.secure_model import keys
from securemodel.operator.secure_model.spec import parse
from securemodel.operator.secure_model.children import Owner, ca_secret_name, client_secret_name, secret_bytes, tls_secret_name
from securemodel.serving.server import ServingServer
from securemodel.serving.tls import client_context

BATCH = np.ones((3, 4), dtype=np.float32)
RELOAD_INTERVAL = 0.05


def answered(server: ServingServer, context: ssl.SSLContext) -> bool:
    """Whether one request on a fresh connection gets an answer (False: a handshake refused it)."""
    client = Client(server.port, context)
    try:
        return client.infer(BATCH)[0] == 200
    except (ssl.SSLError, ConnectionError):
        return False
    finally:
        client.close()


def reloads(server: ServingServer, result: str) -> float:
    value = server.metrics.registry.get_sample_value("securemodel_serving_tls_reloads_total", {"result": result})
    return value or 0.0


class Load:
    """Clients sending infer requests until stopped: one on fresh connections (a handshake per
    request), one on a single keep-alive connection. Records failures and the server serials seen."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context
        self.failures: list[str] = []
        self.serials: list[int] = []
        self.answered = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._fresh), threading.Thread(target=self._keep_alive)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)

    def _one(self, client: Client) -> None:
        try:
            status, body = client.infer(BATCH)
            if status != 200:
                self.failures.append(f"{status} {body}")
            self.answered += 1
        except Exception as err:  # any failure at all is what this test looks for
            self.failures.append(repr(err))

    def _fresh(self) -> None:
        while not self._stop.is_set():
            client = Client(self.port, self.context)
            self._one(client)
            if client.connection.sock is not None:
                self.serials.append(client.server_serial())
            client.close()

    def _keep_alive(self) -> None:
        client = Client(self.port, self.context)
        while not self._stop.is_set():
            self._one(client)
        client.close()


def test_rotation_while_clients_send_loses_no_request(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    volume = pki.server_volume()
    with (
        running_server(LinearModel.random(), volume.root, reload_interval=RELOAD_INTERVAL) as server,
        Load(server.port, client_context(pki.client_dir("frontend"))) as load,
    ):

        def rotate_to(cert: CertifiedKey) -> None:
            volume.update(tls_secret_data(cert, pki.ca.cert_pem))
            serial = cert.certificate.serial_number
            wait_until(lambda: serial in load.serials, "the new certificate in handshakes")

        for _ in range(3):
            rotate_to(pki.server_certificate())

        # A broken update (the key of another certificate) is ignored: the last good one stays.
        rejected = reloads(server, "rejected")
        kept = load.serials[-1]
        mismatched = tls_secret_data(pki.server_certificate(), pki.ca.cert_pem)
        mismatched["tls.key"] = pki.server_certificate().key_pem
        volume.update(mismatched)
        wait_until(lambda: reloads(server, "rejected") > rejected, "the broken update to be rejected")
        answered = load.answered
        wait_until(lambda: load.answered > answered + 5, "more answers after the broken update")
        assert load.serials[-1] == kept

        rotate_to(pki.server_certificate())

    assert load.failures == []
    assert reloads(server, "loaded") == 4
    assert load.answered > 20


def test_replacing_the_ca_applies_to_new_connections(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    volume = pki.server_volume()
    successor = new_ca(MODEL, NAMESPACE, now=pki.now, lifetime=pki.ca.certificate.not_valid_after_utc - pki.now)
    old_client = client_context(pki.client_dir("old"))
    old_client.load_verify_locations(cadata=successor.cert_pem.decode())
    new_client = client_context(pki.client_dir("new", ca=successor))

    def switch(trusted: bytes) -> None:
        loaded = reloads(server, "loaded")
        cert = issue_server_certificate(
            successor,
            service_dns_names(MODEL, NAMESPACE),
            now=pki.now,
            lifetime=pki.ca.certificate.not_valid_after_utc - pki.now,
        )
        volume.update(tls_secret_data(cert, trusted))
        wait_until(lambda: reloads(server, "loaded") > loaded, "the new files to load")

    with running_server(LinearModel.random(), volume.root, reload_interval=RELOAD_INTERVAL) as server:
        assert answered(server, old_client) and not answered(server, new_client)
        established = Client(server.port, old_client)
        assert established.infer(BATCH)[0] == 200

        switch(pki.ca.cert_pem + successor.cert_pem)  # overlap: both CAs trusted
        assert answered(server, old_client) and answered(server, new_client)

        switch(successor.cert_pem)  # the old CA is dropped
        assert answered(server, new_client)
        assert not answered(server, old_client)
        # A connection made before the switch is not cut: the handshake is where trust is checked.
        assert established.infer(BATCH)[0] == 200
        established.close()


def test_the_operators_ca_rollover_refuses_no_client(tmp_path: Path) -> None:
    """The Secrets ``keys.wanted_secrets`` writes across a CA rollover (its timer run in the past, so
    that the certificates are valid now): a client still holding a certificate of the old CA and one
    holding a certificate of the new CA are both answered, before and after the server loads its
    re-issued Secret; a client certificate from an unrelated CA is refused."""
    now = datetime.now(UTC)
    owner = Owner(MODEL, NAMESPACE, "uid")
    spec = parse({"model": {"architecture": "mlp"}, "data": {"source": "builtin://iris"},
                  "privacy": {"budgetRef": "b", "epsilon": 1.0},
                  "serving": {"clients": ["frontend"], "certificateLifetime": "1h"}})  # the CA lives 10h
    stored: dict[str, Any] = {}

    def tick(before_now: timedelta) -> None:
        writes = keys.wanted_secrets(owner, spec, stored, now - before_now)
        stored.update({w.body["metadata"]["name"]: w.body for w in writes})

    def files(name: str) -> dict[str, bytes]:
        return {key: secret_bytes(stored[name], key) or b"" for key in (TLS_CERT, TLS_KEY, CA_CERT)}

    tick(timedelta(hours=8))  # the CA is created
    tick(timedelta(hours=1, minutes=15))  # less than a third of it left: its successor is introduced
    tick(timedelta(minutes=30))  # certificates renewed, still from the old CA
    old_server, old_client = files(tls_secret_name(MODEL)), files(client_secret_name(MODEL, "frontend"))
    tick(timedelta(minutes=15))  # the successor signs; the old CA stays trusted
    new_server, new_client = files(tls_secret_name(MODEL)), files(client_secret_name(MODEL, "frontend"))
    authority = keys.load_authority(stored[ca_secret_name(MODEL)])
    assert authority is not None and len(authority.previous) == 1
    assert issued_by(new_client[TLS_CERT], authority.current) and not issued_by(old_client[TLS_CERT], authority.current)

    volume = SecretVolume(tmp_path / "server-tls", old_server)
    old = client_context(write_dir(tmp_path / "old", old_client))
    new = client_context(write_dir(tmp_path / "new", new_client))
    stranger_dir = Pki(tmp_path / "stranger").client_dir("frontend")
    stranger = ssl.create_default_context(cadata=new_server[CA_CERT].decode())  # it trusts the server
    stranger.load_cert_chain(stranger_dir / TLS_CERT, stranger_dir / TLS_KEY)

    with running_server(LinearModel.random(), volume.root, reload_interval=RELOAD_INTERVAL) as server:
        assert answered(server, old) and answered(server, new) and not answered(server, stranger)
        loaded = reloads(server, "loaded")
        volume.update(new_server)
        wait_until(lambda: reloads(server, "loaded") > loaded, "the re-issued server certificate to load")
        assert answered(server, old) and answered(server, new) and not answered(server, stranger)
