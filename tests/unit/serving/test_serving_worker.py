"""The serve worker end to end in a real process: encrypted artifact and data key file in, mTLS
service out, certificates rotated, SIGTERM honoured, and no key material in anything it logs."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from serving_support import MODEL, AllowListVolume, Client, LinearModel, Pki, SecretVolume, plain_get, wait_until

from securemodel.crypto.artifacts import new_data_key, write_artifact
from securemodel.workers.arguments import model_binding
from securemodel.crypto.pki import tls_secret_data
from securemodel.serving.tls import client_context
from securemodel.workers.serve import MODEL_KIND, add_serve_arguments, serve_artifact

HERE = Path(__file__).parent
BATCH = np.ones((2, 4), dtype=np.float32)
UID, TRAINING, VERSION = "0b6c1f9e-2d1a-4c1e-9a53-5c0e0b7d2f11", "v1a2b3c4d", "v5e6f7a8b"
BINDING = model_binding(UID, TRAINING, "compressed", VERSION)

# The worker, with the test's model loader in place of the worker image's (torch) one.
WORKER = """
import argparse, logging, sys
logging.basicConfig(level=logging.DEBUG)
from serving_support import LinearModel
from securemodel.workers.serve import add_serve_arguments, serve_artifact
parser = argparse.ArgumentParser()
add_serve_arguments(parser)
serve_artifact(parser.parse_args(sys.argv[1:]), LinearModel.from_bytes)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def bound(path: Path, digest: str) -> list[str]:
    """The artifact flags the operator passes: the file, its recorded digest, the model and versions it serves."""
    return [f"--artifact={path}", f"--artifact-digest={digest}", f"--model-uid={UID}",
            f"--training-version={TRAINING}", f"--model-version={VERSION}"]  # fmt: skip


@pytest.fixture
def artifact(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """An encrypted model artifact and the file holding its data key (as a mounted Secret)."""
    key = new_data_key()
    key_file = tmp_path / "data-key" / "key"
    key_file.parent.mkdir()
    key_file.write_bytes(key)
    path = tmp_path / "model.smaf"
    digest = write_artifact(path, LinearModel.random().to_bytes(), key, kind=MODEL_KIND, binding=BINDING)
    (tmp_path / "model.digest").write_text(digest)
    return path, key_file, key


def flags(path: Path) -> list[str]:
    """:func:`bound` for the fixture's artifact, with the digest recorded when it was written."""
    return bound(path, (path.parent / "model.digest").read_text())


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    def ready() -> bool:
        assert process.poll() is None, "the worker exited early"
        with contextlib.suppress(OSError):
            return plain_get(port, "/v2/health/ready")[0] == 200
        return False

    wait_until(ready, "the worker to be ready", timeout=30)


def key_material(*pems: bytes, data_key: bytes) -> list[bytes]:
    """Every form in which a key could leak into a log."""
    forms = [data_key, data_key.hex().encode(), base64.b64encode(data_key), repr(data_key).encode(), b"PRIVATE KEY"]
    for pem in pems:
        forms.append(pem)
        forms.extend(line for line in pem.splitlines() if line and not line.startswith(b"-----"))
    return forms


def test_worker_session_serves_rotates_stops_and_never_logs_keys(
    tmp_path: Path, artifact: tuple[Path, Path, bytes]
) -> None:
    path, key_file, data_key = artifact
    pki = Pki(tmp_path)
    first = pki.server_certificate()
    volume = SecretVolume(tmp_path / "server-tls", tls_secret_data(first, pki.ca.cert_pem))
    port, metrics_port = free_port(), free_port()
    client_dir = pki.client_dir("frontend")
    argv = [
        *flags(path),
        f"--data-key-file={key_file}",
        f"--tls-dir={volume.root}",
        f"--model-name={MODEL}",
        f"--port={port}",
        f"--metrics-port={metrics_port}",
        "--tls-reload-interval=0.05",
        "--drain-seconds=2",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path]), "PYTHONASYNCIODEBUG": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    rotated = pki.server_certificate()
    mismatched = tls_secret_data(pki.server_certificate(), pki.ca.cert_pem)
    mismatched["tls.key"] = pki.server_certificate().key_pem
    try:
        wait_ready(metrics_port, process)
        client = Client(port, client_context(client_dir))
        assert client.infer(BATCH)[0] == 200
        assert client.request("POST", f"/v2/models/{MODEL}/infer", {"inputs": []})[0] == 400
        client.close()
        with pytest.raises((ssl.SSLError, ConnectionError)):
            Client(port, ssl.create_default_context(cafile=volume.root / "ca.crt")).infer(BATCH)

        volume.update(mismatched)
        time.sleep(0.3)
        volume.update(tls_secret_data(rotated, pki.ca.cert_pem))

        def rotated_in_handshakes() -> bool:
            client = Client(port, client_context(client_dir))
            try:
                assert client.infer(BATCH)[0] == 200  # every request meanwhile is answered
                return client.server_serial() == rotated.certificate.serial_number
            finally:
                client.close()

        wait_until(rotated_in_handshakes, "the rotated certificate in handshakes")
        process.send_signal(signal.SIGTERM)
        # Draining: not ready any more, so the Service stops routing to it, but still answering.
        wait_until(lambda: plain_get(metrics_port, "/v2/health/ready")[0] == 400,  # OIP: 400 is "not ready"
                   "the worker not ready after SIGTERM", timeout=5)  # fmt: skip
        client = Client(port, client_context(client_dir))
        assert client.infer(BATCH)[0] == 200
        client.close()
        audit, output = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 0, output.decode(errors="replace")
    assert b"serving with certificate" in output and b"ignoring the TLS files" in output
    assert b"stopped serving model tumor" in output
    # Stdout is the audit trail and nothing else: one JSON line per request on the mTLS port.
    lines = [json.loads(line) for line in audit.decode().splitlines()]
    client_serial = f"{x509.load_pem_x509_certificate((client_dir / 'tls.crt').read_bytes()).serial_number:x}"
    answered = [line for line in lines if line["status"] == 200]
    assert len(answered) >= 3 and {line["client"] for line in lines} == {"frontend"}
    assert {line["serial"] for line in lines} == {client_serial}
    assert [line["status"] for line in lines if line["batchSize"] is None] == [400]  # the empty inputs
    assert all(line["batchSize"] == 2 and line["endpoint"] == "infer" for line in answered)
    keys = [
        pki.ca.key_pem,
        first.key_pem,
        rotated.key_pem,
        mismatched["tls.key"],
        (client_dir / "tls.key").read_bytes(),
    ]
    leaked = [form for form in key_material(*keys, data_key=data_key) if form in output + audit]
    assert leaked == []


def test_worker_answers_the_clients_on_its_allow_list_and_follows_it(
    tmp_path: Path, artifact: tuple[Path, Path, bytes]
) -> None:
    path, key_file, _ = artifact
    pki = Pki(tmp_path)
    volume = pki.server_volume()
    frontend, backend = pki.client_dir("frontend"), pki.client_dir("backend")
    allow = AllowListVolume(tmp_path / "allow-list", {"frontend": [frontend]})
    port, metrics_port = free_port(), free_port()
    argv = [
        *flags(path),
        f"--data-key-file={key_file}",
        f"--tls-dir={volume.root}",
        f"--allow-list={allow.path}",
        f"--model-name={MODEL}",
        f"--port={port}",
        f"--metrics-port={metrics_port}",
        "--reload-interval=0.05",
        "--drain-seconds=0",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def status(client_dir: Path) -> int:
        client = Client(port, client_context(client_dir))
        try:
            return client.infer(BATCH)[0]
        finally:
            client.close()

    try:
        wait_ready(metrics_port, process)
        assert (status(frontend), status(backend)) == (200, 403)
        allow.update({"backend": [backend]})
        wait_until(lambda: status(frontend) == 403, "the client removed from the allow-list to be refused")
        assert status(backend) == 200
        process.send_signal(signal.SIGTERM)
        audit, output = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output.decode(errors="replace")
    assert b"allow-list" in output and b"in force: 1 clients" in output
    lines = [json.loads(line) for line in audit.decode().splitlines()]
    assert (lines[0]["client"], lines[0]["status"]) == ("frontend", 200)
    assert (lines[1]["client"], lines[1]["status"]) == ("backend", 403)
    assert (lines[-2]["client"], lines[-2]["status"]) == ("frontend", 403)
    assert (lines[-1]["client"], lines[-1]["status"]) == ("backend", 200)


def test_an_invalid_allow_list_stops_the_worker_with_a_clear_error(
    tmp_path: Path, artifact: tuple[Path, Path, bytes]
) -> None:
    path, key_file, _ = artifact
    allow_list = tmp_path / "allow-list.json"
    allow_list.write_text('{"version": 1, "clients": [{"name": "frontend"}]}')
    args = serve_args(
        *flags(path),
        f"--data-key-file={key_file}",
        f"--tls-dir={Pki(tmp_path).server_volume().root}",
        f"--allow-list={allow_list}",
        f"--model-name={MODEL}",
    )
    with pytest.raises(SystemExit, match=r"allow-list .*\.json is not valid: clients\[0\] lacks certificates"):
        serve_artifact(args, LinearModel.from_bytes)


def test_tampered_artifact_stops_the_worker_with_a_clear_error(
    tmp_path: Path, artifact: tuple[Path, Path, bytes]
) -> None:
    path, key_file, _ = artifact
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0x01
    tampered = tmp_path / "tampered.smaf"
    tampered.write_bytes(bytes(blob))
    digest = "sha256:" + hashlib.sha256(tampered.read_bytes()).hexdigest()  # a forger who also set the digest
    log = tmp_path / "termination-log"
    log.touch()
    args = serve_args(
        *bound(tampered, digest), f"--data-key-file={key_file}", f"--tls-dir={tmp_path}", f"--model-name={MODEL}",
        f"--termination-log={log}",
    )  # fmt: skip
    expected = r"artifact .*tampered\.smaf failed authentication: modified, truncated or wrong key"
    with pytest.raises(SystemExit, match=expected):
        serve_artifact(args, LinearModel.from_bytes)
    message = json.loads(log.read_text())
    assert message["reason"] == "ArtifactRejected" and re.match(expected, message["message"])


@pytest.mark.parametrize(
    ("swap", "complaint"),
    [
        ("older-version", "version: v00000001, expected v5e6f7a8b; the header is genuine"),
        ("trained-fp32", "encoding: fp32, expected compressed; version: (none), expected v5e6f7a8b; the header is"),
        ("other-model", f"uid: 7d3e2a10-0000-4000-8000-000000000000, expected {UID}"),
        ("same-binding-other-file", "not the sha256:"),
    ],
)
def test_an_artifact_other_than_the_recorded_one_is_refused_before_listening(
    tmp_path: Path, artifact: tuple[Path, Path, bytes], swap: str, complaint: str
) -> None:
    """The e2e scenario of issue 9 in one process: another genuine artifact of this model's key copied over
    the served path. The worker exits 1 with an ArtifactRejected termination message and never listens."""
    path, key_file, key = artifact
    recorded = (tmp_path / "model.digest").read_text()
    binding = {
        "older-version": {**BINDING, "version": "v00000001"},
        "trained-fp32": model_binding(UID, TRAINING, "fp32"),
        "other-model": {**BINDING, "uid": "7d3e2a10-0000-4000-8000-000000000000"},
        "same-binding-other-file": BINDING,
    }[swap]
    path.unlink()
    write_artifact(path, LinearModel.random().to_bytes(), key, kind=MODEL_KIND, binding=binding)
    log = tmp_path / "termination-log"
    log.touch()
    port, metrics_port = free_port(), free_port()
    argv = [*bound(path, recorded), f"--data-key-file={key_file}", f"--tls-dir={Pki(tmp_path).server_volume().root}",
            f"--model-name={MODEL}", f"--port={port}", f"--metrics-port={metrics_port}", f"--termination-log={log}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), *sys.path])}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        while process.poll() is None:  # while it runs, nothing listens on either port
            for candidate in (port, metrics_port):
                with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", candidate), 1):
                    pass
            time.sleep(0.02)
        audit, output = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 1
    message = json.loads(log.read_text())
    assert message["reason"] == "ArtifactRejected" and complaint in message["message"]
    assert message["message"].startswith(f"artifact {path} ")
    assert complaint.encode() in output and audit == b""  # the reason on stderr; no request was answered
    assert b"serving with certificate" not in output


def test_a_data_key_of_the_wrong_length_is_refused(tmp_path: Path, artifact: tuple[Path, Path, bytes]) -> None:
    path, _, _ = artifact
    short = tmp_path / "short-key"
    short.write_bytes(b"0" * 16)
    args = serve_args(
        *flags(path), f"--data-key-file={short}", f"--tls-dir={tmp_path}", f"--model-name={MODEL}"
    )
    with pytest.raises(SystemExit, match="holds 16 bytes, expected 32"):
        serve_artifact(args, LinearModel.from_bytes)


def test_missing_tls_files_stop_the_worker_with_a_clear_error(
    tmp_path: Path, artifact: tuple[Path, Path, bytes]
) -> None:
    path, key_file, _ = artifact
    args = serve_args(
        *flags(path),
        f"--data-key-file={key_file}",
        f"--tls-dir={tmp_path / 'nowhere'}",
        f"--model-name={MODEL}",
    )
    with pytest.raises(SystemExit, match=re.escape("nowhere/tls.crt")):
        serve_artifact(args, LinearModel.from_bytes)


def test_serve_arguments_and_defaults() -> None:
    args = serve_args(*bound(Path("/m/model.smaf"), "sha256:" + "0" * 64), "--data-key-file=/k/key",
                      "--tls-dir=/tls", "--model-name=tumor")  # fmt: skip
    assert (args.port, args.metrics_port, args.artifact_kind) == (8443, 9090, "model")
    assert str(args.termination_log) == "/dev/termination-log" and args.model_version == VERSION
    assert args.artifact == Path("/m/model.smaf") and args.tls_dir == Path("/tls")
    assert args.allow_list is None and args.reload_interval == 2.0
