"""The serve worker end to end in a real process: encrypted artifact and data key file in, mTLS
service out, certificates rotated, SIGTERM honoured, and no key material in anything it logs."""

from __future__ import annotations

import argparse
import base64
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
from serving_support import MODEL, AllowListVolume, Client, LinearModel, Pki, SecretVolume, plain_get

from securemodel.crypto.artifacts import new_data_key, write_artifact
from securemodel.crypto.pki import tls_secret_data
from securemodel.serving.tls import client_context
from securemodel.workers.serve import MODEL_KIND, add_serve_arguments, serve_artifact

HERE = Path(__file__).parent
BATCH = np.ones((2, 4), dtype=np.float32)

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


@pytest.fixture
def artifact(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """An encrypted model artifact and the file holding its data key (as a mounted Secret)."""
    key = new_data_key()
    key_file = tmp_path / "data-key" / "key"
    key_file.parent.mkdir()
    key_file.write_bytes(key)
    path = tmp_path / "model.smaf"
    write_artifact(path, LinearModel.random().to_bytes(), key, kind=MODEL_KIND)
    return path, key_file, key


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, "the worker exited early"
        try:
            if plain_get(port, "/v2/health/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail("the worker did not become ready")


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
        f"--artifact={path}",
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
        deadline = time.monotonic() + 10
        while True:
            client = Client(port, client_context(client_dir))
            assert client.infer(BATCH)[0] == 200
            serial = client.server_serial()
            client.close()
            if serial == rotated.certificate.serial_number:
                break
            assert time.monotonic() < deadline, "the rotated certificate was not picked up"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        # Draining: not ready any more, so the Service stops routing to it, but still answering.
        deadline = time.monotonic() + 5
        while plain_get(metrics_port, "/v2/health/ready")[0] != 400:  # OIP: 400 is "not ready"
            assert time.monotonic() < deadline, "the worker stayed ready after SIGTERM"
            time.sleep(0.05)
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
        f"--artifact={path}",
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
        deadline = time.monotonic() + 10
        while status(frontend) != 403:
            assert time.monotonic() < deadline, "the client removed from the allow-list was still answered"
            time.sleep(0.05)
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
        f"--artifact={path}",
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
    args = serve_args(
        f"--artifact={tampered}", f"--data-key-file={key_file}", f"--tls-dir={tmp_path}", f"--model-name={MODEL}"
    )
    with pytest.raises(
        SystemExit, match=r"artifact .*tampered\.smaf failed authentication: modified, truncated or wrong key"
    ):
        serve_artifact(args, LinearModel.from_bytes)


def test_a_data_key_of_the_wrong_length_is_refused(tmp_path: Path, artifact: tuple[Path, Path, bytes]) -> None:
    path, _, _ = artifact
    short = tmp_path / "short-key"
    short.write_bytes(b"0" * 16)
    args = serve_args(
        f"--artifact={path}", f"--data-key-file={short}", f"--tls-dir={tmp_path}", f"--model-name={MODEL}"
    )
    with pytest.raises(SystemExit, match="holds 16 bytes, expected 32"):
        serve_artifact(args, LinearModel.from_bytes)


def test_missing_tls_files_stop_the_worker_with_a_clear_error(
    tmp_path: Path, artifact: tuple[Path, Path, bytes]
) -> None:
    path, key_file, _ = artifact
    args = serve_args(
        f"--artifact={path}",
        f"--data-key-file={key_file}",
        f"--tls-dir={tmp_path / 'nowhere'}",
        f"--model-name={MODEL}",
    )
    with pytest.raises(SystemExit, match=re.escape("nowhere/tls.crt")):
        serve_artifact(args, LinearModel.from_bytes)


def test_serve_arguments_and_defaults() -> None:
    args = serve_args("--artifact=/m/model.smaf", "--data-key-file=/k/key", "--tls-dir=/tls", "--model-name=tumor")
    assert (args.port, args.metrics_port, args.artifact_kind) == (8443, 9090, "model")
    assert args.artifact == Path("/m/model.smaf") and args.tls_dir == Path("/tls")
    assert args.allow_list is None and args.reload_interval == 2.0
