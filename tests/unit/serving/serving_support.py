"""Support for the serving tests: a tiny numpy classifier, certificates laid out as kubelet mounts a
Secret, a server running on 127.0.0.1 in a background thread, and an HTTPS client that verifies
the server under its Service name while connecting to loopback. Everything is real: real keys,
real certificates, real TLS handshakes.
"""

from __future__ import annotations

import asyncio
import http.client
import io
import json
import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polling
from cryptography import x509

from securemodel.crypto.pki import (
    CertifiedKey,
    issue_client_certificate,
    issue_server_certificate,
    new_ca,
    service_dns_names,
    tls_secret_data,
)
from securemodel.serving.allowlist import FILE_NAME, RateLimit, allow_list_json
from securemodel.serving.server import ServingServer

MODEL = "tumor"
NAMESPACE = "clinic-a"
SERVICE_HOST = f"{MODEL}.{NAMESPACE}.svc"
LIFETIME = timedelta(hours=1)


class LinearModel:
    """A softmax-linear classifier over 4 features and 3 classes (a ``Predictor``)."""

    input_shape = (4,)
    num_classes = 3
    table = None

    def __init__(self, name: str, weights: np.ndarray, bias: np.ndarray) -> None:
        self.name = name
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)

    @classmethod
    def random(cls, name: str = MODEL, seed: int = 0) -> LinearModel:
        rng = np.random.default_rng(seed)
        return cls(name, rng.normal(size=(4, 3)), rng.normal(size=3))

    @classmethod
    def from_bytes(cls, payload: bytes, name: str) -> LinearModel:
        arrays = np.load(io.BytesIO(payload))
        return cls(name, arrays["weights"], arrays["bias"])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, weights=self.weights, bias=self.bias)
        return buffer.getvalue()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        logits = x.reshape(len(x), -1) @ self.weights + self.bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class SecretVolume:
    """A directory laid out as kubelet mounts a Secret: each file links into ``..data``, a link to a
    timestamped directory that an update replaces in one atomic rename."""

    def __init__(self, root: Path, files: dict[str, bytes]) -> None:
        self.root = root
        self.root.mkdir(parents=True)
        self._version = 0
        self.update(files)
        for name in files:
            (root / name).symlink_to(Path("..data") / name)

    def update(self, files: dict[str, bytes]) -> None:
        self._version += 1
        directory = self.root / f"..v{self._version}"
        directory.mkdir(mode=0o700)
        for name, content in files.items():
            (directory / name).write_bytes(content)
        link = self.root / "..data_tmp"
        link.symlink_to(directory.name)
        os.rename(link, self.root / "..data")


class Pki:
    """A model's CA, with helpers to issue server and client certificates into directories."""

    def __init__(self, root: Path, now: datetime | None = None) -> None:
        self.root = root
        self.now = now or datetime.now(UTC)
        self.ca = new_ca(MODEL, NAMESPACE, now=self.now, lifetime=timedelta(days=30))

    def server_certificate(self, ca: CertifiedKey | None = None) -> CertifiedKey:
        return issue_server_certificate(
            ca or self.ca, service_dns_names(MODEL, NAMESPACE), now=self.now, lifetime=LIFETIME
        )

    def server_volume(self, name: str = "server-tls") -> SecretVolume:
        return SecretVolume(self.root / name, tls_secret_data(self.server_certificate(), self.ca.cert_pem))

    def client_dir(self, name: str, *, ca: CertifiedKey | None = None, issued: datetime | None = None) -> Path:
        """A client Secret's files for client ``name``; ``ca.crt`` trusts this PKI's CA (and ``ca``)."""
        client = issue_client_certificate(ca or self.ca, name, now=issued or self.now, lifetime=LIFETIME)
        trusted = self.ca.cert_pem + (ca.cert_pem if ca else b"")
        return write_dir(
            self.root / f"client-{name}-{client.certificate.serial_number:x}", tls_secret_data(client, trusted)
        )


class AllowListVolume:
    """The allow-list file in a ConfigMap volume laid out as kubelet mounts it."""

    def __init__(self, root: Path, clients: dict[str, list[Path]], limits: dict[str, RateLimit] | None = None) -> None:
        self.volume = SecretVolume(root, {FILE_NAME: render(clients, limits)})
        self.path = root / FILE_NAME

    def update(self, clients: dict[str, list[Path]], limits: dict[str, RateLimit] | None = None) -> None:
        self.volume.update({FILE_NAME: render(clients, limits)})

    def write(self, content: bytes) -> None:
        self.volume.update({FILE_NAME: content})


def render(clients: dict[str, list[Path]], limits: dict[str, RateLimit] | None = None) -> bytes:
    """The allow-list of the certificates in client Secret directories, by client name."""
    certificates = {name: [(d / "tls.crt").read_bytes() for d in dirs] for name, dirs in clients.items()}
    return allow_list_json(certificates, limits or {}).encode()


def wait_until(check: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """:func:`polling.wait_until` at the serving tests' pace: every 10 ms (a reload takes tens of milliseconds)."""
    polling.wait_until(check, timeout, what, interval=0.01)


def write_dir(directory: Path, files: dict[str, bytes]) -> Path:
    directory.mkdir(parents=True)
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory


class _LoopbackHTTPSConnection(http.client.HTTPSConnection):
    """Connects to 127.0.0.1 but runs TLS for ``host``, so the server's name is really verified."""

    def __init__(
        self, host: str, port: int, context: ssl.SSLContext, timeout: float, session: ssl.SSLSession | None
    ) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._tls_context = context
        self._session = session

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host, session=self._session)


class Client:
    """One keep-alive HTTPS connection to a server on 127.0.0.1."""

    def __init__(
        self,
        port: int,
        context: ssl.SSLContext,
        *,
        host: str = SERVICE_HOST,
        timeout: float = 5.0,
        session: ssl.SSLSession | None = None,
    ) -> None:
        self.connection = _LoopbackHTTPSConnection(host, port, context, timeout, session)
        self.headers: http.client.HTTPMessage | None = None
        """The headers of the last response."""

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; return the status and the JSON body (``None`` when empty)."""
        payload = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        self.connection.request(method, path, body=payload, headers=headers)
        response = self.connection.getresponse()
        self.headers = response.headers
        raw = response.read()
        return response.status, json.loads(raw) if raw else None

    def infer(self, batch: np.ndarray, model: str = MODEL) -> tuple[int, Any]:
        return self.request("POST", f"/v2/models/{model}/infer", infer_body(batch))

    def _tls(self) -> ssl.SSLSocket:
        sock = self.connection.sock
        assert isinstance(sock, ssl.SSLSocket)
        return sock

    def tls_session(self) -> ssl.SSLSession | None:
        """The TLS session of this connection, to offer for resumption on another."""
        return self._tls().session

    def session_reused(self) -> bool:
        return bool(self._tls().session_reused)

    def server_serial(self) -> int:
        """Serial number of the certificate the server presented on this connection."""
        der = self._tls().getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def close(self) -> None:
        self.connection.close()


def infer_body(batch: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]
    }


def plain_get(port: int, path: str) -> tuple[int, bytes]:
    """A plain-HTTP GET on 127.0.0.1 (the probe and metrics port)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@contextmanager
def running_server(predictor: Any, tls_dir: Path, **options: Any) -> Iterator[ServingServer]:
    """A ``ServingServer`` on 127.0.0.1 (ephemeral ports) in a background thread, stopped on exit."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        box["stop"] = stop
        try:
            async with ServingServer(predictor, tls_dir, host="127.0.0.1", port=0, metrics_port=0, **options) as server:
                box["server"] = server
                started.set()
                await stop.wait()
        except Exception as err:
            box["error"] = err
        finally:
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    if "server" not in box:
        thread.join(5)
        raise RuntimeError("the server did not start") from box.get("error")
    try:
        yield box["server"]
    finally:
        loop.call_soon_threadsafe(box["stop"].set)
        thread.join(15)
        loop.close()
