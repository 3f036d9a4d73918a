"""Certificates replaced in the mounted Secret are picked up without a restart and without a failed
request, while clients keep sending; a broken update is ignored; a replaced CA takes effect for
every new connection."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from serving_support import MODEL, NAMESPACE, Client, LinearModel, Pki, running_server

from securemodel.crypto.pki import CertifiedKey, issue_server_certificate, new_ca, service_dns_names, tls_secret_data
from securemodel.serving.server import ServingServer
from securemodel.serving.tls import client_context

BATCH = np.ones((3, 4), dtype=np.float32)
RELOAD_INTERVAL = 0.05


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


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

    def answered(context: ssl.SSLContext) -> bool:
        client = Client(server.port, context)
        try:
            return client.infer(BATCH)[0] == 200
        except (ssl.SSLError, ConnectionError):
            return False
        finally:
            client.close()

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
        assert answered(old_client) and not answered(new_client)
        established = Client(server.port, old_client)
        assert established.infer(BATCH)[0] == 200

        switch(pki.ca.cert_pem + successor.cert_pem)  # overlap: both CAs trusted
        assert answered(old_client) and answered(new_client)

        switch(successor.cert_pem)  # the old CA is dropped
        assert answered(new_client)
        assert not answered(old_client)
        # A connection made before the switch is not cut: the handshake is where trust is checked.
        assert established.infer(BATCH)[0] == 200
        established.close()
