"""The audit trail: one JSON line per request on the mutual-TLS port, with who asked what and the
answer, a request id that the client also gets, and never an input or an output."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from cryptography import x509
from serving_support import AllowListVolume, Client, LinearModel, Pki, running_server

from securemodel.serving.allowlist import RateLimit
from securemodel.serving.tls import client_context

KEYS = {
    "time", "event", "requestId", "client", "serial", "model", "version",
    "endpoint", "status", "latencyMs", "batchSize",
}  # fmt: skip
VERSION = "v0a1b2c3d"
SECRET_INPUT = 0.123456789  # a value that must never appear in the trail


class Trail(io.StringIO):
    """A stream the server thread writes and the test reads."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            return super().write(text)

    def lines(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(line) for line in self.getvalue().splitlines()]


def serial(client_dir: Path) -> str:
    return f"{x509.load_pem_x509_certificate((client_dir / 'tls.crt').read_bytes()).serial_number:x}"


def exchange(client: Client, send: Callable[[Client], tuple[int, Any]]) -> tuple[int, str]:
    """Send one request; return its status and the request id the server answered with."""
    status, _ = send(client)
    assert client.headers is not None
    return status, client.headers["X-Request-Id"]


def test_every_request_leaves_one_line_and_no_data(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    frontend, removed = pki.client_dir("frontend"), pki.client_dir("removed")
    allow = AllowListVolume(tmp_path / "allow", {"frontend": [frontend]}, {"frontend": RateLimit(0.01, 6)})
    trail = Trail()
    model = LinearModel.random()
    batch = np.full((5, 4), SECRET_INPUT, dtype=np.float32)
    started = datetime.now(UTC)
    with running_server(
        model, pki.server_volume().root, allow_list=allow.path, audit=trail, version=VERSION
    ) as server:
        client = Client(server.port, client_context(frontend))
        answers = [
            exchange(client, lambda c: c.infer(batch)),
            exchange(client, lambda c: c.request("GET", "/v2/models/tumor")),
            exchange(client, lambda c: c.request("POST", "/v2/models/tumor/infer", {"inputs": []})),
            exchange(client, lambda c: c.request("GET", "/nowhere")),
            exchange(client, lambda c: c.infer(batch, model="other")),
            exchange(client, lambda c: c.infer(batch[:2])),
            exchange(client, lambda c: c.infer(batch)),  # over the burst of 6
        ]
        client.close()
        refused = Client(server.port, client_context(removed))
        answers.append(exchange(refused, lambda c: c.infer(batch)))
        refused.close()
    finished = datetime.now(UTC)

    lines = trail.lines()
    assert [(line["status"], line["requestId"]) for line in lines] == answers
    assert [line["status"] for line in lines] == [
        200, 200, 400, 404, 404, 200, 429, 403
    ]  # fmt: skip
    assert all(set(line) == KEYS for line in lines)
    assert [line["endpoint"] for line in lines] == [
        "infer", "model_metadata", "infer", "unmatched", "infer", "infer", "infer", "infer"
    ]  # fmt: skip
    assert [line["batchSize"] for line in lines] == [5, None, None, None, None, 2, None, None]
    assert [line["client"] for line in lines] == ["frontend"] * 7 + ["removed"]
    assert [line["serial"] for line in lines] == [serial(frontend)] * 7 + [serial(removed)]
    assert {line["model"] for line in lines} == {"tumor"} and {line["version"] for line in lines} == {VERSION}
    assert {line["event"] for line in lines} == {"request"}
    for line in lines:
        assert line["time"].endswith("Z")
        assert started <= datetime.fromisoformat(line["time"].replace("Z", "+00:00")) <= finished
        assert 0 <= line["latencyMs"] < 10_000
    assert len({line["requestId"] for line in lines}) == len(lines)

    text = trail.getvalue()
    probabilities = model.predict_proba(batch)
    assert "12345" not in text and str(SECRET_INPUT) not in text
    assert f"{float(probabilities[0, 0])}"[:8] not in text and "probabilities" not in text
