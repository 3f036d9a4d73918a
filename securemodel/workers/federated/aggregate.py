"""``securemodel-worker fl-aggregate``: the aggregator pod's whole job, from SuperLink start to result.

0. with ``--initial-architecture``, build the starting model with fresh weights from the public
   metadata of ``--initial-source`` (:func:`fresh_model`: no data is read) and encrypt it under the
   round's data key, bound to ``--round-uid`` and round 0; otherwise start from the
   ``--initial-model`` artifact, which must be bound to ``--initial-round-uid`` and
   ``--initial-round`` (the previous round's uid and final round number);
1. start :mod:`.superlink` (Flower's ``flower-superlink`` with TLS from ``--tls-dir``,
   ``--enable-supernode-auth``, the Fleet API on ``--port`` for the silos and the Control and
   Runtime APIs for loopback peers only), with Flower's ServerApp runner as its subprocess;
2. register each silo's public key (``--silo-keys-dir/<silo>.pub``) with ``flwr supernode
   register``: only these SuperNodes can connect, and the node id Flower assigns names the silo;
3. submit the run with ``flwr run`` over the loopback interface: an app bundle that only names
   :data:`.server_app.app` and :data:`.client_app.app` (the code is the image's), with the run
   configuration of :class:`.contract.RunSettings` as the app's configuration;
4. wait until ``flwr ls`` says the run finished (:func:`wait_for_run`) or ``--timeout`` passes
   (then ``flwr stop``), stop the SuperLink, and emit the ServerApp's result (:mod:`.contract`) as
   the worker result.

The only accuracy in the result is measured here, by the ServerApp, on ``--evaluation-source``
(data the round declares public, kept apart from every ``--silo-source``); the aggregator never
mounts a silo's data, and no silo evaluates.

Exit status 0 only when the run succeeded. The result never holds key material.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import tomli_w

from securemodel.workers.federated.contract import (
    RESULT_KIND,
    RunSettings,
    canonical_json,
    flower_environment,
    read_result,
)
from securemodel.workers.report import describe_error, emit

CONNECTION = "aggregator"
APP_NAME = "securemodel-federated"
FINISHED = "finished"
ENDED = frozenset({"Succeeded", "Failed"})  # the ServerApp's result once the federation is over
STATUS_INTERVAL = 5.0  # seconds between two ``flwr ls`` while the federation runs


class AggregationError(RuntimeError):
    """The SuperLink, a registration or the run submission failed."""


def flwr_command() -> str:
    """The ``flwr`` CLI installed beside this interpreter."""
    return str(Path(sys.executable).with_name("flwr"))


def fresh_model(architecture: str, params: dict[str, Any], source: str) -> Any:
    """A freshly initialised :class:`securemodel.models.ModelRecord` for a built-in ``source``.

    Its input shape, classes and input map (the published feature bounds) come from the data set's
    public metadata only (:mod:`securemodel.data.builtin`), exactly as the silos' loader builds them,
    so the aggregator reads no data.
    """
    import numpy as np

    from securemodel.data.builtin import BUILTIN_BOUNDS, BUILTIN_CLASSES
    from securemodel.data.loading import IMAGE_SHAPES, Standardization
    from securemodel.data.sources import BuiltinSource, parse_source
    from securemodel.models import ModelRecord, ModelSpec, build_model

    parsed = parse_source(source)
    if not isinstance(parsed, BuiltinSource) or parsed.name not in BUILTIN_BOUNDS:
        raise AggregationError(f"{source}: fresh weights need a built-in data set with published bounds")
    bounds = BUILTIN_BOUNDS[parsed.name]
    shape = IMAGE_SHAPES.get(parsed.name, (len(bounds.low),))
    standardization = Standardization.from_bounds(np.reshape(bounds.low, shape), np.reshape(bounds.high, shape))
    spec = ModelSpec(architecture, None, dict(params))
    classes = BUILTIN_CLASSES[parsed.name]
    return ModelRecord.from_module(spec, build_model(spec, shape, classes), shape, classes, standardization)


def starting_model(args: argparse.Namespace, work: Path) -> tuple[Path, Path, str, int]:
    """(artifact, key file, round uid, round number) the run starts from: ``--initial-model`` bound to
    ``--initial-round-uid`` and ``--initial-round``, or a fresh model written under the round's key and
    bound to ``--round-uid`` and round 0."""
    if args.initial_model is not None:
        if args.initial_model_key_file is None or args.initial_round_uid is None or args.initial_round is None:
            raise AggregationError(
                "--initial-model needs --initial-model-key-file, --initial-round-uid and --initial-round"
            )
        return Path(args.initial_model), Path(args.initial_model_key_file), args.initial_round_uid, args.initial_round
    if not args.initial_source:
        raise AggregationError("--initial-architecture needs --initial-source")
    from securemodel.crypto.artifacts import read_data_key, write_artifact
    from securemodel.models import ARTIFACT_KIND, dump_fp32
    from securemodel.workers.arguments import round_binding

    path = work / "initial.model"
    record = fresh_model(args.initial_architecture, args.initial_params, args.initial_source)
    key = read_data_key(Path(args.data_key_file))
    write_artifact(path, dump_fp32(record), key, kind=ARTIFACT_KIND, binding=round_binding(args.round_uid, 0))
    return path, Path(args.data_key_file), args.round_uid, 0


def write_app(directory: Path, settings: RunSettings) -> Path:
    """The Flower app bundle: a ``pyproject.toml`` naming components of the installed image, with the run
    configuration; no code, no dependencies."""
    clientapp = "app" if settings.secure_aggregation else "plain_app"
    project = {
        "build-system": {"requires": ["hatchling"], "build-backend": "hatchling.build"},
        "project": {
            "name": APP_NAME,
            "version": "1.0.0",
            "description": "securemodel federated round",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "securemodel",
                    "components": {
                        "serverapp": "securemodel.workers.federated.server_app:app",
                        "clientapp": f"securemodel.workers.federated.client_app:{clientapp}",
                    },
                    "config": settings.to_config(),
                }
            }
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(tomli_w.dumps(project))
    return directory


def write_connection(flwr_home: Path, port: int, ca_file: Path) -> None:
    """Flower's CLI configuration: one SuperLink connection to this pod's SuperLink over loopback."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    config = {
        "superlink": {
            "default": CONNECTION,
            CONNECTION: {
                "address": f"localhost:{port}",
                "root-certificates": str(ca_file.resolve()),
            },
        }
    }
    (flwr_home / "config.toml").write_text(tomli_w.dumps(config))


def superlink_command(tls_dir: Path, port: int) -> list[str]:
    """The guarded ``flower-superlink`` command line (see :mod:`.superlink`)."""
    return [
        sys.executable,
        "-m",
        "securemodel.workers.federated.superlink",
        "--ssl-ca-certfile",
        str(tls_dir / "ca.crt"),
        "--ssl-certfile",
        str(tls_dir / "tls.crt"),
        "--ssl-keyfile",
        str(tls_dir / "tls.key"),
        "--enable-supernode-auth",
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        "--isolation",
        "subprocess",
        "--disable-runtime-dependency-installation",
    ]


def _flwr(args: Sequence[str], env: dict[str, str], timeout: float = 60.0) -> dict[str, Any]:
    """Run ``flwr <args> --format json`` and parse its JSON answer."""
    done = subprocess.run(
        [flwr_command(), *args, "--format", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    start = done.stdout.find("{")
    try:
        answer = json.loads(done.stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        answer = {}
    if done.returncode != 0 or not answer.get("success", False):
        detail = answer.get("error-message") or (done.stderr or done.stdout).strip()[-500:]
        raise AggregationError(f"flwr {args[0]} {args[1] if len(args) > 1 else ''} failed: {detail}")
    return answer


def register_silos(keys_dir: Path, env: dict[str, str], deadline: float) -> dict[int, str]:
    """Register every ``<silo>.pub`` in ``keys_dir``; returns node id -> silo (retries until the SuperLink answers)."""
    silos: dict[int, str] = {}
    keys = sorted(keys_dir.glob("*.pub"))
    if not keys:
        raise AggregationError(f"no silo public keys (*.pub) in {keys_dir}")
    for key in keys:
        while True:
            try:
                answer = _flwr(["supernode", "register", str(key), CONNECTION], env)
                break
            except AggregationError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        silos[int(answer["node-id"])] = key.stem
    return silos


def run_status(run_id: str, env: dict[str, str]) -> dict[str, Any]:
    """The run's row of ``flwr ls``."""
    answer = _flwr(["ls", CONNECTION, "--run-id", run_id], env)
    return dict(answer["runs"][0])


def wait_for_run(run_id: str, env: dict[str, str], output_dir: Path, timeout: float, interval: float) -> dict[str, Any]:
    """The run's row of ``flwr ls`` once it has finished; stops the run after ``timeout`` seconds.

    ``flwr ls`` is a process of its own (about 0.3 s of CPU), so it is asked every :data:`STATUS_INTERVAL`
    seconds, and every ``interval`` seconds once the ServerApp's result says the federation has ended, which
    is read every ``interval`` seconds: the run is seen finished promptly without a process a second.
    """
    deadline = time.monotonic() + timeout
    status, asked = run_status(run_id, env), time.monotonic()
    while not str(status["status"]).startswith(FINISHED):
        if time.monotonic() > deadline:
            _flwr(["stop", run_id, CONNECTION], env)
            raise AggregationError(f"the run did not finish within {timeout:.0f}s and was stopped")
        time.sleep(interval)
        ended = (read_result(output_dir, patience=0) or {}).get("status") in ENDED
        if ended or time.monotonic() - asked >= STATUS_INTERVAL:
            status, asked = run_status(run_id, env), time.monotonic()
    return status


def run_aggregate(args: argparse.Namespace) -> int:
    """Run the ``fl-aggregate`` subcommand; returns 0 when the run succeeded."""
    result: dict[str, Any] = {"kind": RESULT_KIND, "status": "Failed"}
    output_dir = Path(args.output_dir)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="flower-"))
    env = flower_environment(FLWR_HOME=str(work / "flwr-home"))
    superlink: subprocess.Popen[bytes] | None = None
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        write_connection(work / "flwr-home", args.port, Path(args.tls_dir) / "ca.crt")
        superlink = subprocess.Popen(
            superlink_command(Path(args.tls_dir), args.port),
            env=env,
            start_new_session=True,
        )
        initial_model, initial_key, initial_round_uid, initial_round = starting_model(args, work)
        silos = register_silos(Path(args.silo_keys_dir), env, time.monotonic() + args.startup_timeout)
        settings = RunSettings(
            silos=silos,
            rounds=args.rounds,
            min_clients=args.min_clients or len(silos),
            secure_aggregation=args.secure_aggregation,
            num_shares=args.num_shares,
            threshold=args.threshold or args.min_clients or len(silos),
            max_weight=args.max_weight,
            round_uid=args.round_uid,
            initial_model=initial_model.resolve(),
            initial_model_key_file=initial_key.resolve(),
            initial_round_uid=initial_round_uid,
            initial_round=initial_round,
            key_file=Path(args.data_key_file).resolve(),
            output_dir=output_dir.resolve(),
            learning_rate=args.learning_rate,
            optimizer=args.optimizer,
            stage_timeout=args.stage_timeout,
            evaluation_source=args.evaluation_source or "",
            evaluation_samples=args.evaluation_samples or 0,
            evaluation_root=Path(args.evaluation_root).resolve(),
            silo_sources=tuple(args.silo_sources),
            data_schema=canonical_json(args.data_schema),
        )
        app = write_app(work / "app", settings)
        submitted = _flwr(["run", str(app), CONNECTION], env)
        run_id = str(submitted["run-id"])
        result["runId"] = run_id
        status = wait_for_run(run_id, env, output_dir, args.timeout, args.poll_interval)
        result.update(read_result(output_dir) or {})
        result["flowerStatus"] = status["status"]
        result["networkBytes"] = status.get("network-traffic", {}).get("total-bytes")
        if status["status"] != f"{FINISHED}:completed" or result.get("status") != "Succeeded":
            result["status"] = "Failed"
            result.setdefault(
                "error",
                f"the Flower run ended {status['status']}: {status.get('status-details', '')}",
            )
            return 1
        return 0
    except Exception as err:  # noqa: BLE001 - every failure still reports what is known
        result.update(read_result(output_dir) or {})
        result.update(status="Failed", error=result.get("error") or describe_error(err))
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        if superlink is not None:
            _stop(superlink)
        emit(result, Path(args.termination_log))


class TerminatedError(Exception):
    """The worker received SIGTERM."""


def _terminate(signum: int, _frame: object) -> None:
    raise TerminatedError(f"received signal {signal.Signals(signum).name}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the SuperLink's process group (it and the ServerApp runner), SIGKILL after 10 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
