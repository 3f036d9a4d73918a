"""Which client certificates the serving pods answer: revoked only by removal or a forced rotation (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from securemodel.crypto.pki import issue_client_certificate, tls_secret_data
from securemodel.operator.secure_model import keys
from securemodel.operator.secure_model.children import Owner, secret, secret_bytes
from securemodel.operator.secure_model.spec import ModelSpecs, parse
from securemodel.serving.allowlist import Peer, parse_allow_list

OWNER = Owner("tumor", "clinic-a", "1234-uid")
L = timedelta(hours=720)
T0 = datetime(2026, 11, 21, tzinfo=UTC)
DAY = timedelta(days=1)
FRONTEND, BATCH = "tumor-client-frontend", "tumor-client-batch"


def spec(*clients: str, **serving: Any) -> ModelSpecs:
    return parse({"model": {"architecture": "mlp"}, "data": {"source": "builtin://breast_cancer"},
                  "privacy": {"budgetRef": "b", "epsilon": 1.0}, "serving": {"clients": list(clients), **serving}})  # fmt: skip


SPEC = spec("frontend", "batch")


def tick(stored: dict[str, Any], now: datetime, model: ModelSpecs = SPEC, **options: Any) -> list[keys.Write]:
    """One pass: store what ``wanted_secrets`` writes."""
    writes = keys.wanted_secrets(OWNER, model, stored, now, **options)
    stored.update({w.body["metadata"]["name"]: w.body for w in writes})
    return writes


def cert(stored: dict[str, Any], name: str) -> bytes:
    value = secret_bytes(stored[name], "tls.crt")
    assert value is not None
    return value


def valid(pem: bytes, at: datetime) -> bool:
    c = x509.load_pem_x509_certificate(pem)
    return c.not_valid_before_utc <= at < c.not_valid_after_utc


def admitted(content: str, pem: bytes) -> bool:
    """What a serving pod decides for a client presenting ``pem`` under this allow-list file."""
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    return parse_allow_list(content.encode()).admit(Peer.from_der(der)) is not None


def test_renewals_and_ca_rollovers_revoke_no_certificate_until_it_expires() -> None:
    """Daily passes over two CA rollovers: every certificate ever issued to a client is admitted
    while it is valid, and the file stays small (expired ones leave it)."""
    stored: dict[str, Any] = {}
    issued: list[bytes] = []
    now, checked, most = T0, 0, 0
    while now <= T0 + 2 * 10 * L:
        tick(stored, now)
        if not issued or issued[-1] != cert(stored, FRONTEND):
            issued.append(cert(stored, FRONTEND))
        content = keys.allow_list(OWNER, SPEC, stored, [], keys.ClientLimits(), now)
        for pem in issued:
            assert admitted(content, pem) == valid(pem, now), (now - T0, issued.index(pem))
            checked += 1
        most = max(most, len(keys.allowed_certificates(OWNER, SPEC, stored, [], now)["frontend"]))
        now += DAY
    assert len(issued) > 10 and checked > 2000
    assert most <= 3


def test_a_forced_rotation_revokes_every_earlier_certificate_of_every_client() -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    tick(stored, T0 + 500 * timedelta(hours=1))  # a routine renewal: the first certificate stays listed
    later = T0 + 21 * DAY
    before = [pem for certificates in keys.allowed_certificates(OWNER, SPEC, stored, [], later).values() for pem in certificates]
    assert len(before) == 4
    tick(stored, later, rotation="r1")
    content = keys.allow_list(OWNER, SPEC, stored, [], keys.ClientLimits(), later)
    assert not any(admitted(content, pem) for pem in before)
    assert admitted(content, cert(stored, FRONTEND)) and admitted(content, cert(stored, BATCH))
    assert all(keys.PREVIOUS_CLIENT_CERT not in stored[name]["data"] for name in (FRONTEND, BATCH))


def test_a_removed_client_is_not_listed_and_the_list_is_what_the_writes_leave() -> None:
    stored: dict[str, Any] = {}
    writes = keys.wanted_secrets(OWNER, SPEC, stored, T0)
    # Before the writes are stored, the list already names the certificates they carry.
    content = keys.allow_list(OWNER, SPEC, stored, writes, keys.ClientLimits(), T0)
    stored.update({w.body["metadata"]["name"]: w.body for w in writes})
    assert admitted(content, cert(stored, FRONTEND)) and admitted(content, cert(stored, BATCH))
    only_frontend = spec("frontend")
    content = keys.allow_list(OWNER, only_frontend, stored, [], keys.ClientLimits(), T0)
    assert [entry["name"] for entry in json.loads(content)["clients"]] == ["frontend"]
    assert not admitted(content, cert(stored, BATCH))


def test_a_rotation_that_stopped_half_way_is_finished_on_the_next_pass() -> None:
    """The serving certificate was re-issued for the rotation but the client Secret's write failed."""
    stored: dict[str, Any] = {}
    tick(stored, T0)
    writes = keys.wanted_secrets(OWNER, SPEC, stored, T0 + DAY, rotation="r1")
    stored.update({w.body["metadata"]["name"]: w.body for w in writes if w.body["metadata"]["name"] == "tumor-tls"})
    again = [w.body["metadata"]["name"] for w in tick(stored, T0 + DAY, rotation="r1")]
    assert sorted(again) == [BATCH, FRONTEND]
    assert tick(stored, T0 + DAY, rotation="r1") == []


def test_a_client_secret_holding_another_clients_certificate_is_reissued_and_not_listed() -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    authority = keys.load_authority(stored["tumor-ca"])
    assert authority is not None
    other = issue_client_certificate(authority.current, "batch", now=T0, lifetime=L)
    swapped = secret(OWNER, FRONTEND, "client", tls_secret_data(other, authority.trusted))
    stored[FRONTEND] = swapped
    assert keys.allowed_certificates(OWNER, SPEC, stored, [], T0)["frontend"] == []
    assert [w.body["metadata"]["name"] for w in tick(stored, T0)] == [FRONTEND]
    assert keys.allowed_certificates(OWNER, SPEC, stored, [], T0)["frontend"] == [cert(stored, FRONTEND)]


def test_client_limits_from_the_spec() -> None:
    limits = keys.client_limits({"replicas": 3, "clientLimits": [{"name": "frontend", "requestsPerSecond": 30, "burst": 10},
                                                                 {"name": "batch", "requestsPerSecond": 5}]})  # fmt: skip
    assert limits.per_pod["frontend"].requests_per_second == 10 and limits.per_pod["frontend"].burst == 4
    assert limits.invalid == {"batch": "it lacks burst"}
    content = keys.allow_list(OWNER, SPEC, {w.body["metadata"]["name"]: w.body for w in keys.wanted_secrets(OWNER, SPEC, {}, T0)},
                              [], limits, T0)  # fmt: skip
    entries = {entry["name"]: entry for entry in json.loads(content)["clients"]}
    assert entries["frontend"]["rateLimit"] == {"requestsPerSecond": 10.0, "burst": 4}
    assert entries["batch"]["certificates"] == [] and "rateLimit" not in entries["batch"]
