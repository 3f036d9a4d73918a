"""Serving benchmark: OIP v2 infer over mutual TLS vs plain HTTP, and the cost of access control.

One server process runs the serve worker's API several times on loopback: behind
``ServingServer``'s mutual TLS without an allow-list, with an allow-list, with an allow-list and a
rate limit (set high enough never to refuse, so only its bookkeeping is measured), with those and
the audit trail (written to a file), and as plain HTTP (the same ``build_app``, same model). This
process drives them with the same client in alternating rounds, each transport taking each place
in the order in turn, so that drift in the machine's load hits all alike, in two connection
modes: keep-alive (TLS costs only record encryption) and a new connection per request (every
request pays a full mutual-TLS handshake; mTLS and plain only). Bounded by ``--requests`` per
round and ``--max-seconds`` of rounds per mode. The model is a numpy MLP of the size of the
breast-cancer example (30 → 64 → 32 → 2), so the numbers measure the transport, not the model.
Then, in this process, the time of one ``ClientGate.check`` (what every request pays for the
allow-list and the rate limiter) on a real TLS 1.3 connection held in memory. Throughput and p50
latency per mode and transport, and keep-alive throughput with access control, are also drawn in
``docs/img/serving.png`` (``--plot``).

    python -m bench.serving [--requests 600] [--rounds 8] [--max-seconds 90] [--concurrency 8] [--batch 1]
        [--check-calls 100000] [--plot docs/img/serving.png]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import multiprocessing
import platform
import ssl
import tempfile
import time
from collections.abc import Callable
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
    TLS_CERT,
    issue_client_certificate,
    issue_server_certificate,
    new_ca,
    service_dns_names,
    tls_secret_data,
)
from securemodel.serving.access import ClientGate
from securemodel.serving.allowlist import RateLimit, allow_list_json
from securemodel.serving.app import build_app
from securemodel.serving.metrics import ServingMetrics
from securemodel.serving.server import ServingServer
from securemodel.serving.tls import ServerTLS, client_context

MODEL, NAMESPACE = "bench", "default"
HOST = f"{MODEL}.{NAMESPACE}.svc"
MODES = {"keep-alive": False, "new connection per request": True}
KEEP_ALIVE = "keep-alive"
# The transports, each a server of its own; the access-control variants run in keep-alive mode only.
MTLS, PLAIN = "mTLS", "plain"
ALLOW_LIST, RATE_LIMIT, AUDIT = "mTLS + allow-list", "mTLS + allow-list + rate limit", "… + audit trail"
VARIANTS = (ALLOW_LIST, RATE_LIMIT, AUDIT)
TRANSPORTS = (MTLS, *VARIANTS, PLAIN)
# Never reached in a run, so the limiter admits every request and only its bookkeeping is measured.
UNREACHED = RateLimit(requests_per_second=1e6, burst=1_000_000)
CHECKS = {MTLS: "identify the client only (no list)", ALLOW_LIST: "allow-list", RATE_LIMIT: "allow-list + rate limit"}


class Mlp:
    """A float32 MLP classifier with random weights (a ``Predictor``)."""

    name = MODEL
    input_shape = (30,)
    num_classes = 2
    table = None

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


def write_pki(root: Path) -> tuple[Path, Path, dict[str, Path]]:
    """A CA, a server Secret directory, a client Secret directory, and allow-lists naming the client
    (``ALLOW_LIST``: without a limit, ``RATE_LIMIT``: with ``UNREACHED``)."""
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
    allow_lists = {ALLOW_LIST: root / "allow-list.json", RATE_LIMIT: root / "allow-list-limited.json"}
    certificates = {"bench": [(directories[1] / TLS_CERT).read_bytes()]}
    allow_lists[ALLOW_LIST].write_text(allow_list_json(certificates, {}))
    allow_lists[RATE_LIMIT].write_text(allow_list_json(certificates, {"bench": UNREACHED}))
    return directories[0], directories[1], allow_lists


def run_servers(
    tls_dir: Path, allow_lists: dict[str, Path], audit: Path, ports: multiprocessing.Queue[dict[str, int]], stop: Event
) -> None:
    """The server process: the mTLS servers (plain, with allow-list, with allow-list and rate limit,
    with those and the audit trail) and the plain-HTTP copy of the API, on loopback."""

    async def main() -> None:
        predictor = Mlp()
        options: dict[str, dict[str, Any]] = {
            MTLS: {},
            ALLOW_LIST: {"allow_list": allow_lists[ALLOW_LIST]},
            RATE_LIMIT: {"allow_list": allow_lists[RATE_LIMIT]},
        }
        with audit.open("w") as trail:
            options[AUDIT] = {"allow_list": allow_lists[RATE_LIMIT], "audit": trail}
            async with contextlib.AsyncExitStack() as stack:
                bound = {}
                for transport, extra in options.items():
                    server = ServingServer(predictor, tls_dir, host="127.0.0.1", port=0, metrics_port=0, **extra)
                    bound[transport] = (await stack.enter_async_context(server)).port
                plain = web.AppRunner(build_app(predictor, ServingMetrics(), lambda: True), access_log=None)
                await plain.setup()
                await web.TCPSite(plain, "127.0.0.1", 0).start()
                bound[PLAIN] = plain.addresses[0][1]
                ports.put(bound)
                while not stop.is_set():
                    await asyncio.sleep(0.1)
                await plain.cleanup()

    asyncio.run(main())


@dataclass
class Series:
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    rounds: list[float] = field(default_factory=list)
    """Requests per second of each round."""

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
    seconds = time.perf_counter() - started
    series.seconds += seconds
    series.rounds.append(requests / seconds)


async def benchmark(args: argparse.Namespace, ports: dict[str, int], client_dir: Path) -> dict[tuple[str, str], Series]:
    """Alternate rounds between the transports, one connection mode after the other.

    Each transport keeps one client session per mode, warmed up first, so in keep-alive mode the
    measured requests run on connections whose handshakes are already done.
    """
    batch = np.random.default_rng(1).normal(size=(args.batch, 30)).astype(np.float32)
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]}
    ).encode()
    path = f"/v2/models/{MODEL}/infer"
    context = client_context(client_dir)
    results: dict[tuple[str, str], Series] = {}
    for mode, fresh in MODES.items():
        deadline = time.monotonic() + args.max_seconds
        transports = TRANSPORTS if mode == KEEP_ALIVE else (MTLS, PLAIN)
        targets = {
            transport: (
                f"{'http' if transport == PLAIN else 'https'}://127.0.0.1:{ports[transport]}{path}",
                None if transport == PLAIN else context,
            )
            for transport in transports
        }
        results.update({(mode, transport): Series() for transport in transports})
        sessions = {
            transport: aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls or False, force_close=fresh, limit=args.concurrency)
            )
            for transport, (_, tls) in targets.items()
        }
        try:
            for transport, (url, tls) in targets.items():
                warm_up = Series()
                await drive(
                    sessions[transport],
                    url,
                    body,
                    requests=100,
                    concurrency=args.concurrency,
                    secure=bool(tls),
                    series=warm_up,
                )
            order = list(targets)
            for _ in range(args.rounds):
                if time.monotonic() > deadline:
                    break
                order = order[1:] + order[:1]  # each transport takes each place in turn
                for transport in order:
                    url, tls = targets[transport]
                    await drive(
                        sessions[transport],
                        url,
                        body,
                        requests=args.requests,
                        concurrency=args.concurrency,
                        secure=bool(tls),
                        series=results[(mode, transport)],
                    )
        finally:
            for session in sessions.values():
                await session.close()
    return results


def connected_pair(server_dir: Path, client_dir: Path) -> ssl.SSLObject:
    """The server end of a mutual-TLS 1.3 connection, handshake done, held in memory BIOs."""
    to_server, from_server, to_client, from_client = (ssl.MemoryBIO() for _ in range(4))
    server = ServerTLS(server_dir, ServingMetrics()).context.wrap_bio(to_server, from_server, server_side=True)
    client = client_context(client_dir).wrap_bio(to_client, from_client, server_hostname=HOST)
    done = set()
    for _ in range(10):
        for end in (client, server):
            try:
                end.do_handshake()
                done.add(end)
            except ssl.SSLWantReadError:
                pass
        to_server.write(from_client.read())
        to_client.write(from_server.read())
        if len(done) == 2:
            return server
    raise RuntimeError("the in-memory handshake did not finish")


def check_costs(server_dir: Path, client_dir: Path, allow_lists: dict[str, Path], calls: int) -> dict[str, float]:
    """Microseconds per ``ClientGate.check`` on one connection: without a list, with one, with a limit too."""
    connection = connected_pair(server_dir, client_dir)
    gates: dict[str, Callable[[], object]] = {}
    for transport, path in ((MTLS, None), (ALLOW_LIST, allow_lists[ALLOW_LIST]), (RATE_LIMIT, allow_lists[RATE_LIMIT])):
        gate = ClientGate(path, ServingMetrics())
        assert gate.check(connection).refusal is None
        gates[transport] = functools.partial(gate.check, connection)
    costs = dict.fromkeys(gates, float("inf"))
    for _ in range(5):  # interleaved repeats; the fastest of each is the least disturbed by other work
        for transport, check in gates.items():
            started = time.perf_counter()
            for _ in range(calls):
                check()
            costs[transport] = min(costs[transport], (time.perf_counter() - started) / calls * 1e6)
    return costs


def round_ratios(results: dict[tuple[str, str], Series], variant: str) -> list[float]:
    """Keep-alive req/s of ``variant`` ÷ mTLS without access control, round by round (run side by side)."""
    baseline = results[(KEEP_ALIVE, MTLS)].rounds
    return [rate / base for rate, base in zip(results[(KEEP_ALIVE, variant)].rounds, baseline, strict=False)]


def round_ratio(results: dict[tuple[str, str], Series], variant: str) -> float:
    """The median of ``round_ratios``: robust to a round disturbed by other work on the machine."""
    return float(np.median(round_ratios(results, variant)))


def report(args: argparse.Namespace, results: dict[tuple[str, str], Series], costs: dict[str, float]) -> str:
    lines = [
        f"up to {args.rounds} alternating rounds of {args.requests} requests per transport and mode "
        f"(at most {args.max_seconds:.0f} s of rounds per mode), "
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
        secure, plain = results[(mode, MTLS)], results[(mode, PLAIN)]
        if secure.latencies and plain.latencies:
            lines.append(
                f"| {mode} | {secure.requests_per_second() / plain.requests_per_second():.2f} | "
                f"{secure.percentile_ms(50) / plain.percentile_ms(50):.2f} | "
                f"{secure.percentile_ms(99) / plain.percentile_ms(99):.2f} |"
            )
    baseline = results[(KEEP_ALIVE, MTLS)]
    lines += [
        "",
        "| keep-alive, access control | req/s ÷ mTLS without | median of round ratios (range) | p50 ÷ without |",
        "| --- | ---: | ---: | ---: |",
    ]
    for variant in VARIANTS:
        series = results[(KEEP_ALIVE, variant)]
        if series.latencies and baseline.latencies:
            ratios = round_ratios(results, variant)
            lines.append(
                f"| {variant} | {series.requests_per_second() / baseline.requests_per_second():.3f} | "
                f"{round_ratio(results, variant):.3f} ({min(ratios):.2f}–{max(ratios):.2f}) | "
                f"{series.percentile_ms(50) / baseline.percentile_ms(50):.3f} |"
            )
    per_request = 1e6 / baseline.requests_per_second() if baseline.latencies else float("nan")
    lines += [
        "",
        f"| ClientGate.check, one connection (µs per request) | µs | share of {per_request:.0f} µs per request |",
        "| --- | ---: | ---: |",
    ]
    for transport, label in CHECKS.items():
        lines.append(f"| {label} | {costs[transport]:.2f} | {costs[transport] / per_request:.2%} |")
    return "\n".join(lines)


def plot(args: argparse.Namespace, results: dict[tuple[str, str], Series], path: Path) -> Path:
    """Three panels: req/s and p50 latency by connection mode, mTLS vs plain HTTP; and keep-alive
    req/s with access control relative to mTLS without it."""
    modes = [mode for mode in MODES if all(results[(mode, t)].latencies for t in (MTLS, PLAIN))]
    categories = [mode.replace(" per ", "\nper ") for mode in modes]
    throughput = {t: [results[(mode, t)].requests_per_second() for mode in modes] for t in (MTLS, PLAIN)}
    latency = {t: [results[(mode, t)].percentile_ms(50) for mode in modes] for t in (MTLS, PLAIN)}
    variants = [v for v in VARIANTS if results[(KEEP_ALIVE, v)].latencies]
    relative = {"req/s ÷ mTLS without (median of rounds)": [round_ratio(results, v) for v in variants]}
    panels = [
        Panel("Throughput (higher is better)", "requests per second", categories, throughput, "{:.0f}"),
        Panel("Median latency (lower is better)", "p50 latency (ms)", categories, latency, "{:.1f}"),
        Panel(
            "Access control, keep-alive mTLS",
            "req/s relative to mTLS without it",
            [v.replace("mTLS + ", "").replace(" + ", "\n+ ") for v in variants],
            relative,
            "{:.3f}",
            reference=1.0,
        ),
    ]
    title = (
        f"OIP v2 infer on loopback, mTLS vs plain HTTP: {args.concurrency} concurrent clients, batch {args.batch}, "
        f"{multiprocessing.cpu_count()} CPUs"
    )
    return bar_charts(path, title, panels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per transport, mode and round")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1, help="samples per infer request")
    parser.add_argument(
        "--max-seconds", type=float, default=90, help="per connection mode: start no round after this"
    )
    parser.add_argument("--check-calls", type=int, default=100_000, help="ClientGate.check calls per timing")
    parser.add_argument("--plot", type=Path, default=IMG_DIR / "serving.png", help="write the figure here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        server_dir, client_dir, allow_lists = write_pki(Path(scratch))
        spawn = multiprocessing.get_context("spawn")
        ports: multiprocessing.Queue[dict[str, int]] = spawn.Queue()
        stop = spawn.Event()
        audit = Path(scratch) / "audit.jsonl"
        server = spawn.Process(target=run_servers, args=(server_dir, allow_lists, audit, ports, stop))
        server.start()
        try:
            results = asyncio.run(benchmark(args, ports.get(timeout=60), client_dir))
        finally:
            stop.set()
            server.join(15)
        costs = check_costs(server_dir, client_dir, allow_lists, args.check_calls)
    print(report(args, results, costs))
    print(f"figure: {plot(args, results, args.plot)}")


if __name__ == "__main__":
    main()
