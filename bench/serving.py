"""Serving benchmark: OIP v2 infer over mutual TLS vs the same server over plain HTTP, side by side.

One server process runs the serve worker's API twice on loopback, once behind ``ServingServer``'s
mutual TLS and once as plain HTTP (the same ``build_app``, same model). This process drives both
with the same client, alternating rounds so that drift in the machine's load hits both alike, in
two connection modes: keep-alive (TLS costs only record encryption) and a new connection per
request (every request pays a full mutual-TLS handshake). Bounded by ``--requests`` per round and
``--max-seconds`` overall. The model is a numpy MLP of the size of the breast-cancer example
(30 → 64 → 32 → 2), so the numbers measure the transport, not the model. Throughput and p50
latency per mode and transport are also drawn in ``docs/img/serving.png`` (``--plot``).

    python -m bench.serving [--requests 1500] [--rounds 3] [--concurrency 8] [--batch 1]
        [--plot docs/img/serving.png]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import multiprocessing
import platform
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web

from bench.plots import IMG_DIR, Panel, bar_charts
from securemodel.crypto.pki import (
    issue_client_certificate,
    issue_server_certificate,
    new_ca,
    service_dns_names,
    tls_secret_data,
)
from securemodel.serving.app import build_app
from securemodel.serving.metrics import ServingMetrics
from securemodel.serving.server import ServingServer
from securemodel.serving.tls import client_context

MODEL, NAMESPACE = "bench", "default"
HOST = f"{MODEL}.{NAMESPACE}.svc"
MODES = {"keep-alive": False, "new connection per request": True}


class Mlp:
    """A float32 MLP classifier with random weights (a ``Predictor``)."""

    name = MODEL
    input_shape = (30,)
    num_classes = 2

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        sizes = [30, 64, 32, 2]
        self.layers = [
            (rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32), np.zeros(b, np.float32))
            for a, b in itertools.pairwise(sizes)
        ]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        h = x.reshape(len(x), -1)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0)
        e = np.exp(h - h.max(axis=1, keepdims=True))
        probabilities: np.ndarray = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return probabilities


def write_pki(root: Path) -> tuple[Path, Path]:
    """A CA, a server Secret directory and a client Secret directory."""
    now = datetime.now(UTC)
    ca = new_ca(MODEL, NAMESPACE, now=now, lifetime=timedelta(days=1))
    server = issue_server_certificate(ca, service_dns_names(MODEL, NAMESPACE), now=now, lifetime=timedelta(hours=1))
    client = issue_client_certificate(ca, "bench", now=now, lifetime=timedelta(hours=1))
    directories = []
    for name, leaf in (("server", server), ("client", client)):
        directory = root / name
        directory.mkdir()
        for file, content in tls_secret_data(leaf, ca.cert_pem).items():
            (directory / file).write_bytes(content)
        directories.append(directory)
    return directories[0], directories[1]


def run_servers(tls_dir: Path, ports: multiprocessing.Queue[tuple[int, int]], stop: Event) -> None:
    """The server process: the mTLS server and the plain-HTTP copy of its API, on loopback."""

    async def main() -> None:
        predictor = Mlp()
        async with ServingServer(predictor, tls_dir, host="127.0.0.1", port=0, metrics_port=0) as secure:
            plain = web.AppRunner(build_app(predictor, ServingMetrics(), lambda: True), access_log=None)
            await plain.setup()
            await web.TCPSite(plain, "127.0.0.1", 0).start()
            ports.put((secure.port, plain.addresses[0][1]))
            while not stop.is_set():
                await asyncio.sleep(0.1)
            await plain.cleanup()

    asyncio.run(main())


@dataclass
class Series:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    def requests_per_second(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies, q) * 1000)


async def drive(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    *,
    requests: int,
    concurrency: int,
    secure: bool,
    series: Series,
) -> None:
    """Send ``requests`` infer requests from ``concurrency`` workers; add their latencies to ``series``."""
    extra: dict[str, Any] = {"server_hostname": HOST} if secure else {}
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}, **extra) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status}")
            series.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    series.seconds += time.perf_counter() - started


async def benchmark(
    args: argparse.Namespace, secure_port: int, plain_port: int, client_dir: Path
) -> dict[tuple[str, str], Series]:
    """Alternate rounds between the transports, one connection mode after the other.

    Each transport keeps one client session per mode, warmed up first, so in keep-alive mode the
    measured requests run on connections whose handshakes are already done.
    """
    batch = np.random.default_rng(1).normal(size=(args.batch, 30)).astype(np.float32)
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]}
    ).encode()
    path = f"/v2/models/{MODEL}/infer"
    targets = {
        "mTLS": (f"https://127.0.0.1:{secure_port}{path}", client_context(client_dir)),
        "plain": (f"http://127.0.0.1:{plain_port}{path}", None),
    }
    results = {(mode, transport): Series() for mode in MODES for transport in targets}
    deadline = time.monotonic() + args.max_seconds
    for mode, fresh in MODES.items():
        sessions = {
            transport: aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=context or False, force_close=fresh, limit=args.concurrency)
            )
            for transport, (_, context) in targets.items()
        }
        try:
            for transport, (url, context) in targets.items():
                warm_up = Series()
                await drive(
                    sessions[transport],
                    url,
                    body,
                    requests=100,
                    concurrency=args.concurrency,
                    secure=bool(context),
                    series=warm_up,
                )
            for _ in range(args.rounds):
                for transport, (url, context) in targets.items():
                    if time.monotonic() > deadline:
                        break
                    await drive(
                        sessions[transport],
                        url,
                        body,
                        requests=args.requests,
                        concurrency=args.concurrency,
                        secure=bool(context),
                        series=results[(mode, transport)],
                    )
        finally:
            for session in sessions.values():
                await session.close()
    return results


def report(args: argparse.Namespace, results: dict[tuple[str, str], Series]) -> str:
    lines = [
        f"{args.rounds} alternating rounds of {args.requests} requests per transport and mode, "
        f"{args.concurrency} concurrent clients, batch {args.batch}; Python {platform.python_version()}, "
        f"{ssl.OPENSSL_VERSION}, {multiprocessing.cpu_count()} CPUs",
        "",
        "| connections | transport | requests | req/s | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for (mode, transport), series in results.items():
        if series.latencies:
            lines.append(
                f"| {mode} | {transport} | {len(series.latencies)} | {series.requests_per_second():.0f} | "
                f"{series.percentile_ms(50):.2f} | {series.percentile_ms(99):.2f} |"
            )
    lines += [
        "",
        "| connections | mTLS ÷ plain req/s | mTLS ÷ plain p50 | mTLS ÷ plain p99 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for mode in MODES:
        secure, plain = results[(mode, "mTLS")], results[(mode, "plain")]
        if secure.latencies and plain.latencies:
            lines.append(
                f"| {mode} | {secure.requests_per_second() / plain.requests_per_second():.2f} | "
                f"{secure.percentile_ms(50) / plain.percentile_ms(50):.2f} | "
                f"{secure.percentile_ms(99) / plain.percentile_ms(99):.2f} |"
            )
    return "\n".join(lines)


def plot(args: argparse.Namespace, results: dict[tuple[str, str], Series], path: Path) -> Path:
    """Two panels by connection mode: req/s and p50 latency, mTLS vs plain HTTP."""
    modes = [mode for mode in MODES if all(results[(mode, t)].latencies for t in ("mTLS", "plain"))]
    categories = [mode.replace(" per ", "\nper ") for mode in modes]
    throughput = {t: [results[(mode, t)].requests_per_second() for mode in modes] for t in ("mTLS", "plain")}
    latency = {t: [results[(mode, t)].percentile_ms(50) for mode in modes] for t in ("mTLS", "plain")}
    panels = [
        Panel("Throughput (higher is better)", "requests per second", categories, throughput, "{:.0f}"),
        Panel("Median latency (lower is better)", "p50 latency (ms)", categories, latency, "{:.1f}"),
    ]
    title = (
        f"OIP v2 infer on loopback, mTLS vs plain HTTP: {args.concurrency} concurrent clients, batch {args.batch}, "
        f"{multiprocessing.cpu_count()} CPUs"
    )
    return bar_charts(path, title, panels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per transport, mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="samples per infer request")
    parser.add_argument("--max-seconds", type=float, default=120, help="stop starting new rounds after this")
    parser.add_argument("--plot", type=Path, default=IMG_DIR / "serving.png", help="write the figure here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        server_dir, client_dir = write_pki(Path(scratch))
        spawn = multiprocessing.get_context("spawn")
        ports: multiprocessing.Queue[tuple[int, int]] = spawn.Queue()
        stop = spawn.Event()
        server = spawn.Process(target=run_servers, args=(server_dir, ports, stop))
        server.start()
        try:
            secure_port, plain_port = ports.get(timeout=60)
            results = asyncio.run(benchmark(args, secure_port, plain_port, client_dir))
        finally:
            stop.set()
            server.join(15)
    print(report(args, results))
    print(f"figure: {plot(args, results, args.plot)}")


if __name__ == "__main__":
    main()
