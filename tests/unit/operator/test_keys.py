"""The model's key Secrets across CA rollovers: real certificates, checked with cryptography's path
validation; the operator's timer is simulated by calling ``wanted_secrets`` and storing its writes."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.verification import (
    Criticality,
    DNSName,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

from securemodel.crypto.pki import issued_by, renewal_due, time_left
from securemodel.operator.secure_model import keys
from securemodel.operator.secure_model.spec import ModelSpecs, parse
from securemodel.operator.secure_model.children import Owner, secret_bytes

OWNER = Owner("tumor", "clinic-a", "1234-uid")
L = timedelta(hours=720)


def model_spec(lifetime: str = "720h", clients: tuple[str, ...] = ("frontend",)) -> ModelSpecs:
    return parse({
        "model": {"architecture": "mlp"},
        "data": {"source": "builtin://breast_cancer"},
        "privacy": {"budgetRef": "b", "epsilon": 1.0},
        "serving": {"clients": list(clients), "certificateLifetime": lifetime},
    })  # fmt: skip


SPEC = model_spec()
T0 = datetime(2026, 11, 21, tzinfo=UTC)
DAY = timedelta(days=1)
CA, TLS, FRONTEND = "tumor-ca", "tumor-tls", "tumor-client-frontend"
LEAVES = (TLS, FRONTEND)
HOST = "tumor.clinic-a.svc"


def tick(
    stored: dict[str, Any], now: datetime, spec: ModelSpecs = SPEC, owner: Owner = OWNER, **options: Any
) -> list[str]:
    """One pass of the operator: store what ``wanted_secrets`` writes; return the names written."""
    writes = keys.wanted_secrets(owner, spec, stored, now, **options)
    stored.update({w.body["metadata"]["name"]: w.body for w in writes})
    return [w.body["metadata"]["name"] for w in writes]


def authority(stored: dict[str, Any]) -> keys.Authority:
    loaded = keys.load_authority(stored[CA])
    assert loaded is not None
    return loaded


def file(stored: dict[str, Any], name: str, key: str) -> bytes:
    value = secret_bytes(stored[name], key)
    assert value is not None
    return value


def run_until(stored: dict[str, Any], now: datetime, done: Any) -> datetime:
    """Run the timer daily from ``now`` until ``done(stored)``; return the time it became true."""
    while not done(stored):
        now += DAY
        tick(stored, now)
        assert now < T0 + 3 * 10 * L, "never happened"
    return now


def store_of(bundle: bytes) -> Store:
    return Store(x509.load_pem_x509_certificates(bundle))


def server_trusts_client(server_ca_crt: bytes, client_crt: bytes, at: datetime) -> bool:
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    verifier = (
        PolicyBuilder()
        .store(store_of(server_ca_crt))
        .time(at)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )
    try:
        verifier.verify(x509.load_pem_x509_certificate(client_crt), [])
    except VerificationError:
        return False
    return True


def client_trusts_server(client_ca_crt: bytes, server_crt: bytes, at: datetime) -> bool:
    verifier = PolicyBuilder().store(store_of(client_ca_crt)).time(at).build_server_verifier(DNSName(HOST))
    try:
        verifier.verify(x509.load_pem_x509_certificate(server_crt), [])
    except VerificationError:
        return False
    return True


def test_a_new_model_gets_one_ca_that_every_certificate_trusts() -> None:
    stored: dict[str, Any] = {}
    assert sorted(tick(stored, T0)) == [CA, FRONTEND, "tumor-data-key", TLS]
    ca = authority(stored)
    assert ca.next is None and ca.previous == ()
    assert sorted(stored[CA]["data"]) == ["tls.crt", "tls.key"]
    assert time_left(ca.current.cert_pem, T0) == 10 * L
    for name in LEAVES:
        assert file(stored, name, "ca.crt") == ca.current.cert_pem
        assert issued_by(file(stored, name, "tls.crt"), ca.current)
    assert tick(stored, T0) == []
    assert tick(stored, T0 + L / 2) == []


def test_a_due_ca_is_trusted_for_one_lifetime_before_it_signs_and_retired_once_expired() -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    old = authority(stored).current

    # 1. A third of the CA's lifetime left: a successor is added to every ca.crt; the old CA still signs.
    staged = run_until(stored, T0, lambda s: authority(s).next is not None)
    assert staged == T0 + 201 * DAY  # the first pass with less than a third of 300 days left
    new = authority(stored).next
    assert new is not None and authority(stored).current == old
    assert sorted(stored[CA]["data"]) == ["next.crt", "next.key", "tls.crt", "tls.key"]
    for name in LEAVES:
        assert file(stored, name, "ca.crt") == old.cert_pem + new.cert_pem
        assert issued_by(file(stored, name, "tls.crt"), old)
    assert tick(stored, staged) == []

    # 2. One lifetime later the successor signs; the old CA's certificate stays trusted, its key is gone.
    promoted = run_until(stored, staged, lambda s: authority(s).current != old)
    assert promoted == staged + L
    assert authority(stored) == keys.Authority(new, None, (old.cert_pem,))
    assert sorted(stored[CA]["data"]) == ["previous.crt", "tls.crt", "tls.key"]
    assert old.key_pem not in stored[CA]["data"].values()
    for name in LEAVES:
        assert file(stored, name, "ca.crt") == new.cert_pem + old.cert_pem
        assert issued_by(file(stored, name, "tls.crt"), new)
    assert tick(stored, promoted) == []

    # 3. The old CA is dropped from every ca.crt once it has expired.
    dropped = run_until(stored, promoted, lambda s: authority(s).previous == ())
    assert dropped == T0 + 10 * L
    assert sorted(stored[CA]["data"]) == ["tls.crt", "tls.key"]
    for name in LEAVES:
        assert file(stored, name, "ca.crt") == new.cert_pem
        assert issued_by(file(stored, name, "tls.crt"), new)
    assert tick(stored, dropped) == []


@dataclass(frozen=True)
class Version:
    """The content of a certificate Secret from ``since`` until ``until`` (None: still current)."""

    since: datetime
    until: datetime | None
    cert: bytes
    ca_crt: bytes

    def read_within(self, start: datetime, end: datetime) -> bool:
        return self.since <= end and (self.until is None or self.until > start)


def histories(end: datetime) -> Iterator[tuple[datetime, dict[str, list[Version]]]]:
    """Run the timer daily from T0 to ``end``; yield the time and every version of each leaf Secret.

    The pass before a successor is introduced forces a rotation: the hardest case, fresh
    certificates of the old CA whose ``ca.crt`` trusts the old CA only.
    """
    stored: dict[str, Any] = {}
    history: dict[str, list[Version]] = {name: [] for name in LEAVES}
    now = T0
    while now <= end:
        ca = keys.load_authority(stored.get(CA))
        last_before_successor = ca is not None and renewal_due(ca.current.cert_pem, now + DAY, 10 * L) and not ca.next
        for name in tick(stored, now, force_renewal=last_before_successor):
            if name in history:
                versions = history[name]
                if versions:
                    versions[-1] = replace(versions[-1], until=now)
                versions.append(Version(now, None, file(stored, name, "tls.crt"), file(stored, name, "ca.crt")))
        yield now, history
        now += DAY


def test_no_valid_certificate_is_refused_across_two_rollovers_by_anyone_who_reads_within_a_lifetime() -> None:
    """Right after each pass and right before the next, the server and a client holding any version
    of their Secrets read in the last L trust each other's certificate, if it is within its validity."""
    checked = 0
    for now, history in histories(T0 + 2 * 10 * L):
        for at in (now, now + DAY - timedelta(seconds=1)):
            servers = [v for v in history[TLS] if v.read_within(at - L, at) and _valid(v.cert, at)]
            clients = [v for v in history[FRONTEND] if v.read_within(at - L, at) and _valid(v.cert, at)]
            assert servers and clients
            for server in servers:
                for client in clients:
                    where = (at - T0, server.since - T0, client.since - T0)
                    assert server_trusts_client(server.ca_crt, client.cert, at), where
                    assert client_trusts_server(client.ca_crt, server.cert, at), where
                    checked += 1
    assert checked > 1200


def _valid(cert_pem: bytes, at: datetime) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc <= at < cert.not_valid_after_utc


def test_a_certificate_from_an_unrelated_ca_is_refused() -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    stranger: dict[str, Any] = {}
    tick(stranger, T0, owner=Owner("tumor", "clinic-a", "other-uid"))
    assert not server_trusts_client(file(stored, TLS, "ca.crt"), file(stranger, FRONTEND, "tls.crt"), T0)
    assert not client_trusts_server(file(stored, FRONTEND, "ca.crt"), file(stranger, TLS, "tls.crt"), T0)


def test_forced_rotation_reissues_leaves_from_the_same_cas_during_a_rollover() -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    staged = run_until(stored, T0, lambda s: authority(s).next is not None)
    before = authority(stored)
    assert sorted(tick(stored, staged, force_renewal=True)) == sorted(LEAVES)
    assert sorted(tick(stored, staged, rotation="r1")) == sorted(LEAVES)
    assert "annotations" not in stored[CA]["metadata"]
    assert all(stored[name]["metadata"]["annotations"] == {keys.ROTATION_ANNOTATION: "r1"} for name in LEAVES)
    assert tick(stored, staged, rotation="r1") == []
    assert authority(stored) == before
    for name in LEAVES:
        assert issued_by(file(stored, name, "tls.crt"), before.current)
        assert file(stored, name, "ca.crt") == before.trusted


@pytest.mark.parametrize(
    ("key", "value"),
    [("tls.key", b"garbage"), ("tls.crt", b"garbage"), ("tls.key", None)],
)
def test_an_unreadable_ca_secret_is_reported_and_never_regenerated(key: str, value: bytes | None) -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    data = stored[CA]["data"]
    if value is None:
        del data[key]
    else:
        data[key] = base64.b64encode(value).decode()
    with pytest.raises(keys.UnreadableAuthority, match="tumor-ca"):
        keys.wanted_secrets(OWNER, SPEC, stored, T0 + DAY)


def test_a_missing_ca_secret_is_recreated() -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    del stored[CA]
    writes = keys.wanted_secrets(OWNER, SPEC, stored, T0)
    assert [(w.body["metadata"]["name"], w.replace) for w in writes] == [(CA, False), (TLS, True), (FRONTEND, True)]


def test_unreadable_successor_or_retired_certificates_are_left_out() -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    trusted = authority(stored).trusted
    garbage = base64.b64encode(b"garbage").decode()
    stored[CA]["data"] |= {"next.crt": garbage, "next.key": garbage, "previous.crt": garbage}
    assert tick(stored, T0) == [CA]  # rewritten without them; the trust bundle is unchanged
    assert sorted(stored[CA]["data"]) == ["tls.crt", "tls.key"]
    assert authority(stored).trusted == trusted


def test_a_lengthened_lifetime_the_ca_cannot_sign_replaces_it_at_once() -> None:
    short = model_spec("1h")
    stored: dict[str, Any] = {}
    tick(stored, T0, short)
    old = authority(stored).current
    assert sorted(tick(stored, T0 + timedelta(hours=1), SPEC)) == sorted([CA, *LEAVES])
    new = authority(stored)
    assert new.next is None and new.previous == (old.cert_pem,)  # still trusted until it expires
    assert time_left(new.current.cert_pem, T0 + timedelta(hours=1)) == 10 * L
    for name in LEAVES:
        assert issued_by(file(stored, name, "tls.crt"), new.current)
        assert file(stored, name, "ca.crt") == new.current.cert_pem + old.cert_pem


def test_a_shortened_lifetime_rolls_over_to_a_ca_of_the_new_lifetime() -> None:
    day = model_spec("24h")
    stored: dict[str, Any] = {}
    tick(stored, T0)
    old = authority(stored).current
    tick(stored, T0 + DAY, day)
    staged = authority(stored)
    assert staged.current == old and staged.next is not None
    assert time_left(staged.next.cert_pem, T0 + DAY) == 10 * DAY
    assert tick(stored, T0 + DAY + timedelta(hours=12), day) == []
    tick(stored, T0 + 2 * DAY, day)
    assert authority(stored) == keys.Authority(staged.next, None, (old.cert_pem,))


def test_reprs_show_no_key_material() -> None:
    stored: dict[str, Any] = {}
    tick(stored, T0)
    run_until(stored, T0, lambda s: authority(s).next is not None)
    ca = authority(stored)
    assert ca.next is not None
    shown = repr(ca) + str(ca)
    for key_pem in (ca.current.key_pem, ca.next.key_pem):
        assert all(line.decode() not in shown for line in key_pem.splitlines()[1:-1])
    assert "PRIVATE" not in shown
