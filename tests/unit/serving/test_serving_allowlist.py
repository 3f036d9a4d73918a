"""The allow-list file: what it admits, what the parser refuses, and what the operator's side renders."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from securemodel.crypto.pki import CertifiedKey, issue_client_certificate, new_ca
from securemodel.serving.allowlist import (
    AllowedClient,
    Peer,
    RateLimit,
    allow_list_json,
    parse_allow_list,
    pod_rate_limits,
)

NOW = datetime.now(UTC)
CA = new_ca("tumor", "clinic-a", now=NOW, lifetime=timedelta(days=1))


def client(name: str) -> CertifiedKey:
    return issue_client_certificate(CA, name, now=NOW, lifetime=timedelta(hours=1))


def peer(cert: CertifiedKey) -> Peer:
    return Peer.from_der(cert.certificate.public_bytes(Encoding.DER))


def document(*clients: dict[str, Any]) -> bytes:
    return json.dumps({"version": 1, "clients": list(clients)}).encode()


FRONTEND, BACKEND = client("frontend"), client("backend")


def test_peer_reads_cn_serial_and_fingerprint() -> None:
    der = FRONTEND.certificate.public_bytes(Encoding.DER)
    seen = Peer.from_der(der)
    assert seen.common_name == "frontend" and seen.serial == FRONTEND.certificate.serial_number
    assert seen.sha256 == hashlib.sha256(der).digest() and int(seen.serial_hex, 16) == seen.serial


def test_rendered_list_admits_exactly_the_listed_certificates() -> None:
    limit = RateLimit(5.0, 10)
    text = allow_list_json({"frontend": [FRONTEND.cert_pem], "backend": [BACKEND.cert_pem]}, {"frontend": limit})
    allowed = parse_allow_list(text.encode())
    assert allowed.admit(peer(FRONTEND)) == AllowedClient("frontend", limit)
    assert allowed.admit(peer(BACKEND)) == AllowedClient("backend", None)
    assert allowed.admit(peer(client("frontend"))) is None  # a new certificate of a listed client
    assert allowed.admit(peer(client("other"))) is None
    reordered = {"backend": [BACKEND.cert_pem], "frontend": [FRONTEND.cert_pem]}
    assert text == allow_list_json(reordered, {"frontend": limit})  # deterministic


def test_a_serial_counts_only_under_its_own_name_and_fingerprint() -> None:
    serial = format(FRONTEND.certificate.serial_number, "X")  # either case
    renamed = parse_allow_list(document({"name": "backend", "certificates": [{"serial": serial}]}))
    assert renamed.admit(peer(FRONTEND)) is None
    wrong_digest = document({"name": "frontend", "certificates": [{"serial": serial, "sha256": "00" * 32}]})
    assert parse_allow_list(wrong_digest).admit(peer(FRONTEND)) is None
    serial_only = parse_allow_list(document({"name": "frontend", "certificates": [{"serial": serial}]}))
    assert serial_only.admit(peer(FRONTEND)) == AllowedClient("frontend", None)


def test_rendering_refuses_a_certificate_of_another_client() -> None:
    with pytest.raises(ValueError, match="a certificate of client 'frontend' has CN 'backend'"):
        allow_list_json({"frontend": [BACKEND.cert_pem]}, {})


SERIAL = {"serial": "1f"}


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b"[1", "not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "not JSON: RecursionError"),  # must not stop the reload timer
        (b"[]", "the file must be an object"),
        (b'{"clients": []}', "the file lacks version"),
        (b'{"version": 2, "clients": []}', "version 2 is not supported"),
        (b'{"version": 1, "clients": [], "default": {}}', "unknown keys default"),
        (b'{"version": 1, "clients": {}}', "'clients' must be a list"),
        (document({"name": "Front_End", "certificates": []}), r"clients\[0\].name must be a DNS-1123 label"),
        (document({"name": "a", "certificates": []}, {"name": "a", "certificates": []}), "listed twice"),
        (document({"name": "a", "certificates": [SERIAL]}, {"name": "b", "certificates": [SERIAL]}), "1f is listed"),
        (document({"name": "a", "certificates": [{"serial": "0x1f"}]}), "must be a hexadecimal serial"),
        (document({"name": "a", "certificates": [{"serial": 31}]}), "must be a hexadecimal serial"),
        (document({"name": "a", "certificates": [{"serial": "1f", "sha256": "ab"}]}), "64 hexadecimal digits"),
        (document({"name": "a", "certificates": [{"serial": "1f", "pem": "x"}]}), "unknown keys pem"),
        (document({"name": "a"}), "lacks certificates"),
        (document({"name": "a", "certificates": [], "rateLimit": {"burst": 1}}), "lacks requestsPerSecond"),
        (document({"name": "a", "certificates": [], "rateLimit": {"requestsPerSecond": 0, "burst": 1}}), "0 <"),
        (document({"name": "a", "certificates": [], "rateLimit": {"requestsPerSecond": 1, "burst": 0}}), "1 ≤"),
        (document({"name": "a", "certificates": [], "rateLimit": {"requestsPerSecond": 1, "burst": 1.5}}), "integer"),
        (document({"name": "a", "certificates": [], "rateLimit": {"requestsPerSecond": True, "burst": 1}}), "number"),
    ],
)
def test_an_invalid_file_is_refused_saying_why(content: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_allow_list(content)


def test_each_pod_gets_its_share_of_the_spec_limit() -> None:
    serving = {
        "replicas": 3,
        "clients": ["frontend", "batch"],
        "clientLimits": [
            {"name": "frontend", "requestsPerSecond": 30, "burst": 100},
            {"name": "batch", "requestsPerSecond": 0.5, "burst": 1},
        ],
    }
    assert pod_rate_limits(serving) == {"frontend": RateLimit(10.0, 34), "batch": RateLimit(0.5 / 3, 1)}
    assert pod_rate_limits({**serving, "replicas": 0})["frontend"] == RateLimit(30.0, 100)
    assert pod_rate_limits({"clients": ["frontend"]}) == {}
