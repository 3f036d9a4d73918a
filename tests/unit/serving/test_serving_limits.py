"""Per-client rate limits over real mutual TLS: beyond its burst a client is answered 429 with
Retry-After, other clients are not affected, and the metrics port counts every client's requests,
refusals and 429s."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serving_support import AllowListVolume, Client, LinearModel, Pki, plain_get, running_server, wait_until

from securemodel.serving.allowlist import RateLimit
from securemodel.serving.server import ServingServer
from securemodel.serving.tls import client_context

BATCH = np.ones((1, 4), dtype=np.float32)
LIMIT = RateLimit(requests_per_second=2.0, burst=4)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def clients(pki: Pki) -> dict[str, Path]:
    return {name: pki.client_dir(name) for name in ("frontend", "backend", "removed")}


@pytest.fixture(scope="module")
def server(pki: Pki, clients: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingServer]:
    allow = AllowListVolume(
        tmp_path_factory.mktemp("allow") / "volume",
        {"frontend": [clients["frontend"]], "backend": [clients["backend"]]},
        {"frontend": LIMIT},
    )
    with running_server(LinearModel.random(), pki.server_volume().root, allow_list=allow.path) as server:
        yield server


def client_metrics(server: ServingServer) -> dict[tuple[str, str], float]:
    """The per-client samples scraped from the metrics port: (metric, client) → value."""
    status, text = plain_get(server.metrics_port, "/metrics")
    assert status == 200
    return {
        (sample.name, sample.labels["client"]): sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
        if "client" in sample.labels
    }


def test_beyond_its_burst_a_client_gets_429_with_retry_after(server: ServingServer, clients: dict[str, Path]) -> None:
    frontend = Client(server.port, client_context(clients["frontend"]))
    started = time.monotonic()
    answered = 0
    while (answer := frontend.infer(BATCH))[0] == 200:
        answered += 1
    elapsed = time.monotonic() - started
    assert LIMIT.burst <= answered <= LIMIT.burst + math.ceil(elapsed * LIMIT.requests_per_second)
    status, body = answer
    assert status == 429 and body == {"error": "client frontend is over its rate limit"}
    assert frontend.headers is not None and frontend.headers["Retry-After"] == "1"  # 1/rate = 0.5 s, rounded up
    assert frontend.connection.sock is not None  # a 429 keeps the connection open

    backend = Client(server.port, client_context(clients["backend"]))  # unlimited, unaffected
    assert all(backend.infer(BATCH)[0] == 200 for _ in range(3 * LIMIT.burst))
    backend.close()

    time.sleep(int(frontend.headers["Retry-After"]))
    assert frontend.infer(BATCH)[0] == 200
    frontend.close()


def test_metrics_count_each_clients_requests_refusals_and_429s(
    server: ServingServer, clients: dict[str, Path]
) -> None:
    before = client_metrics(server)
    removed = Client(server.port, client_context(clients["removed"]))
    assert removed.infer(BATCH)[0] == 403
    removed.close()
    frontend = Client(server.port, client_context(clients["frontend"]))
    codes = [frontend.infer(BATCH)[0] for _ in range(2 * LIMIT.burst)]
    frontend.close()
    assert 429 in codes

    def grew(metric: str, client: str) -> float:
        return client_metrics(server).get((metric, client), 0.0) - before.get((metric, client), 0.0)

    wait_until(lambda: grew("securemodel_serving_client_requests_total", "frontend") == len(codes), "the counts")
    assert grew("securemodel_serving_client_rate_limited_total", "frontend") == codes.count(429)
    assert grew("securemodel_serving_client_refused_total", "frontend") == 0
    assert grew("securemodel_serving_client_requests_total", "removed") == 1
    assert grew("securemodel_serving_client_refused_total", "removed") == 1
    assert grew("securemodel_serving_client_rate_limited_total", "backend") == 0
