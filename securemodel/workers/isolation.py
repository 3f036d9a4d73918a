"""``await-isolation``: the init container that holds a pod's other containers until its NetworkPolicy is enforced.

A NetworkPolicy engine programs a new pod's rules a moment after the pod's network exists (about
1–3 s with kube-router on the local cluster); a container started in that window could reach
anything. Every pod the operator runs is isolated from the Kubernetes API server by its policy
(:mod:`securemodel.operator.secure_model.network`), so this init container — in the same network
namespace as the containers that follow — connects to the API server's Service (the
``KUBERNETES_SERVICE_HOST``/``PORT`` the kubelet gives every container) until
:data:`CONSECUTIVE_FAILURES` attempts in a row fail, and only then exits 0.

Guarantee: no container after it starts while the pod can still open a connection to the API
server, i.e. before the engine enforces the pod's egress rules. It fails closed: a pod whose
probe still connects after ``--within`` seconds (no engine, or a policy that lets it through)
exits 1 and never runs its workload; the reason is its termination message. An API server that
is down during the check would pass it early; the consecutive failures, spaced
:data:`INTERVAL_SECONDS` apart, make a transient refusal unlikely to be mistaken for enforcement.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

CONSECUTIVE_FAILURES: Final = 3
INTERVAL_SECONDS: Final = 0.5
CONNECT_TIMEOUT_SECONDS: Final = 1.0


def connects(host: str, port: int, timeout: float = CONNECT_TIMEOUT_SECONDS) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def await_isolation(
    probe: Callable[[], bool],
    within: float,
    *,
    failures: int = CONSECUTIVE_FAILURES,
    interval: float = INTERVAL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> float | None:
    """Seconds until ``probe`` failed ``failures`` times in a row, or None if that did not happen within ``within`` s."""
    start = clock()
    in_a_row = 0
    while clock() - start <= within:
        in_a_row = 0 if probe() else in_a_row + 1
        if in_a_row >= failures:
            return clock() - start
        time.sleep(interval)
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--within", type=float, default=120.0, help="seconds to wait for enforcement before failing the pod"
    )


def run(args: argparse.Namespace) -> int:
    """Exit 0 once the pod is isolated; 1, with the reason in the termination log, if it is not in time."""
    termination_log: Path = args.termination_log
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        return _refuse(termination_log, "KUBERNETES_SERVICE_HOST/PORT are not set: no probe of the pod's isolation")
    waited = await_isolation(lambda: connects(host, int(port)), args.within)
    if waited is None:
        return _refuse(
            termination_log,
            f"the pod could still connect to the API server {host}:{port} after {args.within:.0f} s: "
            "its NetworkPolicy is not enforced (is a NetworkPolicy engine running?)",
        )
    print(f"network isolation enforced after {waited:.1f} s", flush=True)
    return 0


def _refuse(termination_log: Path, message: str) -> int:
    print(message, file=sys.stderr, flush=True)
    try:
        termination_log.write_text(f"NetworkNotIsolated: {message}")
    except OSError:
        pass
    return 1
