"""A round on this machine: the pods' own commands (``fl-aggregate``, ``fl-client``) as local processes.

Used by the tests, the benchmark and the accuracy comparison in docs/federated.md. It lays out
what the operator would put in Secrets (the round's CA and SuperLink certificate, one
authentication key per silo, the data keys, the starting model) under one directory, then starts
one aggregator process and one process per silo on 127.0.0.1, exactly with the command lines of
the pods (see docs/federated.md). Nothing is mocked: TLS, SuperNode authentication and SecAgg+
are Flower's, as in the cluster.

The round has a uid of its own (:attr:`LocalRound.uid`, as a FederatedRound's ``metadata.uid``):
each ``round-NNN.model`` is bound to it and NNN. The starting model is written as the final
global model of a previous one-round run (:attr:`LocalRound.initial_uid`), as ``fromRound``
hands it to the aggregator.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Self

from securemodel.crypto.artifacts import new_data_key, write_artifact
from securemodel.crypto.pki import new_ca
from securemodel.models import ARTIFACT_KIND, ModelRecord, dump_fp32
from securemodel.workers.arguments import round_binding
from securemodel.workers.federated.credentials import (
    issue_superlink_certificate,
    new_supernode_key,
)

# Flower's ClientApp, SuperExec and ServerApp processes each load torch; one thread each keeps
# a 2-core machine responsive with tens of them.
THREAD_ENVIRONMENT = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclass(frozen=True)
class LocalSilo:
    """One silo's data and DP-SGD mechanism (what its pod's ``fl-client`` arguments say)."""

    name: str
    source: str
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int
    rounds: int
    max_grad_norm: float = 1.0
    allow_plain_aggregation: bool = False
    samples: int | None = None  # of a pvc:// source
    schema: Mapping[str, Any] | None = None  # spec.data.schema of a pvc:// source
    data_root: Path | None = None  # where the silo's pvc:// volume is


@dataclass(frozen=True)
class RoundOptions:
    """What the aggregator's ``fl-aggregate`` arguments say."""

    rounds: int = 1
    min_clients: int | None = None
    threshold: int | None = None
    secure_aggregation: bool = True
    learning_rate: float = 0.1
    max_weight: int = 1000
    stage_timeout: float = 120.0
    timeout: float = 600.0
    evaluation_source: str | None = None  # public data the global model is evaluated on
    evaluation_samples: int | None = None
    evaluation_root: Path | None = None
    schema: Mapping[str, Any] | None = None  # the silos' spec.data.schema, to encode a pvc:// evaluation file


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
    return path


@dataclass
class _Process:
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None


class LocalRound:
    """One federated round's processes under ``directory``; a context manager that stops them all."""

    def __init__(
        self,
        directory: Path,
        silos: Sequence[LocalSilo],
        initial: ModelRecord,
        options: RoundOptions,
    ) -> None:
        self.directory = directory
        self.silos = list(silos)
        self.options = options
        self.port = free_port()
        self.uid = str(uuid.uuid4())
        self.initial_uid = str(uuid.uuid4())
        self.output_dir = directory / "aggregator" / "out"
        self.output_dir.mkdir(parents=True)
        self.round_key_file = _write(directory / "aggregator" / "round-key", new_data_key())
        now = datetime.now(UTC)
        ca = new_ca("round", "local", now=now, lifetime=timedelta(hours=2))
        leaf = issue_superlink_certificate(ca, ["localhost"], now=now, lifetime=timedelta(hours=1))
        tls = directory / "aggregator" / "tls"
        _write(tls / "ca.crt", ca.cert_pem, 0o644)
        _write(tls / "tls.crt", leaf.cert_pem, 0o644)
        _write(tls / "tls.key", leaf.key_pem)
        initial_key = new_data_key()
        self.initial_key_file = _write(directory / "aggregator" / "initial-key", initial_key)
        self.initial_model = directory / "aggregator" / "initial.model"
        write_artifact(self.initial_model, dump_fp32(initial), initial_key, kind=ARTIFACT_KIND,
                       binding=round_binding(self.initial_uid, 1))  # fmt: skip
        for silo in self.silos:
            key = new_supernode_key()
            _write(
                directory / "aggregator" / "silo-keys" / f"{silo.name}.pub",
                key.public_openssh,
                0o644,
            )
            _write(directory / silo.name / "auth.key", key.private_openssh)
        self.aggregator: _Process | None = None
        self.clients: dict[str, _Process] = {}

    def aggregator_command(self) -> list[str]:
        """The aggregator pod's command, with this round's files."""
        agg = self.directory / "aggregator"
        o = self.options
        command = [
            sys.executable, "-m", "securemodel.workers.cli", "fl-aggregate",
            "--tls-dir", str(agg / "tls"),
            "--silo-keys-dir", str(agg / "silo-keys"),
            "--port", str(self.port),
            "--round-uid", self.uid,
            "--rounds", str(o.rounds),
            "--learning-rate", str(o.learning_rate),
            "--max-weight", str(o.max_weight),
            "--initial-model", str(self.initial_model),
            "--initial-model-key-file", str(self.initial_key_file),
            "--initial-round-uid", self.initial_uid,
            "--initial-round", "1",
            "--data-key-file", str(self.round_key_file),
            "--output-dir", str(self.output_dir),
            "--stage-timeout", str(o.stage_timeout),
            "--timeout", str(o.timeout),
            "--work-dir", str(agg / "work"),
            "--termination-log", str(agg / "termination-log"),
        ]  # fmt: skip
        if o.min_clients:
            command += ["--min-clients", str(o.min_clients)]
        if o.threshold:
            command += ["--threshold", str(o.threshold)]
        if not o.secure_aggregation:
            command.append("--no-secure-aggregation")
        if o.evaluation_source:
            command += ["--evaluation-source", o.evaluation_source]
            for silo in self.silos:
                command += ["--silo-source", silo.source]
        if o.evaluation_samples:
            command += ["--evaluation-samples", str(o.evaluation_samples)]
        if o.evaluation_root is not None:
            command += ["--evaluation-root", str(o.evaluation_root)]
        if o.schema is not None:
            command += ["--data-schema", json.dumps(o.schema)]
        return command

    def client_command(self, silo: LocalSilo) -> list[str]:
        """One silo pod's command, with this round's files."""
        home = self.directory / silo.name
        command = [
            sys.executable, "-m", "securemodel.workers.cli", "fl-client",
            "--name", silo.name,
            "--superlink", f"localhost:{self.port}",
            "--ca-file", str(self.directory / "aggregator" / "tls" / "ca.crt"),
            "--auth-key-file", str(home / "auth.key"),
            "--data-source", silo.source,
            "--noise-multiplier", str(silo.noise_multiplier),
            "--sample-rate", str(silo.sample_rate),
            "--steps-per-round", str(silo.steps_per_round),
            "--rounds", str(silo.rounds),
            "--max-grad-norm", str(silo.max_grad_norm),
            "--progress-file", str(home / "progress.json"),
            "--runtime-port", str(free_port()),
            "--termination-log", str(home / "termination-log"),
        ]  # fmt: skip
        if silo.allow_plain_aggregation:
            command.append("--allow-plain-aggregation")
        if silo.samples is not None:
            command += ["--data-samples", str(silo.samples)]
        if silo.schema is not None:
            command += ["--data-schema", json.dumps(silo.schema)]
        if silo.data_root is not None:
            command += ["--data-root", str(silo.data_root)]
        return command

    def _spawn(self, command: list[str], log: Path) -> _Process:
        env = {**os.environ, **THREAD_ENVIRONMENT}
        process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        handle = _Process(process)
        handle.reader = threading.Thread(target=_pump, args=(process.stdout, handle.lines, log), daemon=True)
        handle.reader.start()
        return handle

    def start(self) -> None:
        """Start the aggregator, then every silo (they retry until the SuperLink admits them)."""
        for silo in self.silos:
            (self.directory / silo.name / "termination-log").touch()
        (self.directory / "aggregator" / "termination-log").touch()
        self.aggregator = self._spawn(self.aggregator_command(), self.directory / "aggregator.log")
        for silo in self.silos:
            self.clients[silo.name] = self._spawn(self.client_command(silo), self.directory / f"{silo.name}.log")

    def wait(self, timeout: float) -> dict[str, Any]:
        """The aggregator's result once it exits (its termination message)."""
        assert self.aggregator is not None
        self.aggregator.process.wait(timeout=timeout)
        return dict(json.loads((self.directory / "aggregator" / "termination-log").read_text()))

    def silo_lines(self, name: str) -> list[str]:
        """What a silo's processes printed so far."""
        return list(self.clients[name].lines)

    def kill_silo(self, name: str) -> None:
        """SIGKILL a silo's process group, as when its pod dies (Flower's SuperExec follows its parent)."""
        os.killpg(self.clients[name].process.pid, signal.SIGKILL)

    def silo_report(self, name: str) -> dict[str, Any]:
        """A stopped silo's termination message."""
        return dict(json.loads((self.directory / name / "termination-log").read_text()))

    def stop_silos(self, timeout: float = 30.0) -> None:
        """SIGTERM every silo still running, as Kubernetes stops a pod, and wait for it."""
        for handle in self.clients.values():
            if handle.process.poll() is None:
                handle.process.send_signal(signal.SIGTERM)
        for handle in self.clients.values():
            try:
                handle.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(handle.process.pid, signal.SIGKILL)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_silos()
        handles = [self.aggregator, *self.clients.values()]
        for handle in handles:
            if handle is not None and handle.process.poll() is None:
                os.killpg(handle.process.pid, signal.SIGKILL)
                handle.process.wait()
        time.sleep(0.5)  # Flower's SuperExec processes notice their parent is gone


def _pump(stream: IO[str] | None, lines: list[str], log: Path) -> None:
    if stream is None:
        return
    with log.open("a") as sink:
        for line in stream:
            lines.append(line)
            sink.write(f"{time.strftime('%H:%M:%S')} {line}")
            sink.flush()
