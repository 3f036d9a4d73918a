"""``securemodel-worker fl-client``: one silo's Flower SuperNode, and the silo's own account of what it spent.

Runs ``flower-supernode`` (through :mod:`.prompt_supernode`, which only shortens its idle wait; TLS to
the SuperLink verified against the round's CA, requests signed with the silo's authentication key, the
ClientAppIO API on the loopback interface only, no runtime dependency installation) with the silo's
:class:`.contract.SiloSettings` as its node configuration. A SuperNode the SuperLink refuses (its key not
registered yet) exits; it is started again for ``--restart-window`` seconds. On SIGTERM (or when that
window is over) the worker emits a :data:`.contract.SILO_REPORT_KIND` result with the rounds trained and
the noisy steps run, read from the silo's progress file: what its budget must be settled from.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from securemodel.workers.federated.contract import (
    SILO_REPORT_KIND,
    SiloProgress,
    SiloSettings,
    canonical_json,
    config_overrides,
    flower_environment,
)
from securemodel.workers.report import describe_error, emit

RESTART_DELAY = 1.0  # seconds between SuperNode starts


def silo_settings(args: argparse.Namespace) -> SiloSettings:
    """The node configuration from the ``fl-client`` arguments."""
    return SiloSettings(
        silo=args.name,
        data_source=args.data_source,
        data_samples=args.data_samples,
        data_root=Path(args.data_root),
        noise_multiplier=args.noise_multiplier,
        sample_rate=args.sample_rate,
        steps_per_round=args.steps_per_round,
        rounds=args.rounds,
        max_grad_norm=args.max_grad_norm,
        progress_file=Path(args.progress_file),
        secure_aggregation=not args.allow_plain_aggregation,
        data_schema=canonical_json(args.data_schema),
    )


def supernode_command(args: argparse.Namespace, settings: SiloSettings) -> list[str]:
    """The ``flower-supernode`` command line for this silo (run by :mod:`.prompt_supernode`; ``-P``: the
    working directory is not searched for modules, as for an installed command)."""
    return [
        sys.executable,
        "-P",
        "-m",
        "securemodel.workers.federated.prompt_supernode",
        "--superlink",
        args.superlink,
        "--root-certificates",
        str(args.ca_file),
        "--auth-supernode-private-key",
        str(args.auth_key_file),
        "--node-config",
        config_overrides(settings.to_config()),
        "--host",
        "127.0.0.1",
        "--port",
        str(args.runtime_port),
        "--isolation",
        "subprocess",
    ]


def run_client(args: argparse.Namespace) -> int:
    """Run the ``fl-client`` subcommand until the pod is stopped (or the SuperNode gives up for good)."""
    result: dict[str, Any] = {"kind": SILO_REPORT_KIND, "silo": args.name}
    settings: SiloSettings | None = None
    process: subprocess.Popen[bytes] | None = None
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        if process is not None and process.poll() is None:
            process.terminate()

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        settings = silo_settings(args)
        deadline = time.monotonic() + args.restart_window
        while True:
            home = str(settings.progress_file.parent / "flwr-home")  # Flower's app cache: a writable directory
            process = subprocess.Popen(supernode_command(args, settings), env=flower_environment(FLWR_HOME=home))
            code = process.wait()
            # flower-supernode exits when the SuperLink refuses it, e.g. before its key is registered.
            if stopping or time.monotonic() > deadline:
                break
            time.sleep(RESTART_DELAY)
        result.update(status="Stopped", supernodeExitCode=code)
        return 0
    except Exception as err:  # noqa: BLE001 - every failure still reports what the silo spent
        result.update(status="Failed", error=describe_error(err))
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if settings is not None:
            spent = SiloProgress.read(settings.progress_file)
            result.update(
                roundsTrained=spent.rounds_trained,
                steps=spent.steps,
                noiseMultiplier=settings.noise_multiplier,
                sampleRate=settings.sample_rate,
                stepsPerRound=settings.steps_per_round,
            )
        emit(result, Path(args.termination_log))
