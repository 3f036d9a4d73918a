"""The per-model PKI, checked with an independent verifier (cryptography's RFC 5280 path validation)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import (
    ClientVerifier,
    Criticality,
    DNSName,
    ExtensionPolicy,
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from securemodel.crypto.pki import (
    CertifiedKey,
    age,
    issue_client_certificate,
    issue_server_certificate,
    issued_by,
    new_ca,
    parse_lifetime,
    renewal_due,
    service_dns_names,
    split_certificates,
    time_left,
    tls_secret_data,
)

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
HOURS_720 = timedelta(hours=720)
NAMES = service_dns_names("tumor", "clinic-a")


@pytest.fixture(scope="module")
def ca() -> CertifiedKey:
    return new_ca("tumor", "clinic-a", now=NOW, lifetime=timedelta(days=365))


def server_verifier(ca: CertifiedKey, at: datetime, name: str) -> ServerVerifier:
    """RFC 5280 / Web PKI path validation of a server certificate for ``name``."""
    return PolicyBuilder().store(Store([ca.certificate])).time(at).build_server_verifier(DNSName(name))


def client_verifier(ca: CertifiedKey, at: datetime) -> ClientVerifier:
    """The same for a client certificate, except that it needs no subjectAltName: clients are
    identified by CN, as OpenSSL's TLS client authentication accepts."""
    ee_policy = ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None
    )
    return (
        PolicyBuilder()
        .store(Store([ca.certificate]))
        .time(at)
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy)
        .build_client_verifier()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720h", timedelta(hours=720)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2h0m15s", timedelta(hours=2, seconds=15)),
        ("45s", timedelta(seconds=45)),
    ],
)
def test_parse_lifetime(text: str, expected: timedelta) -> None:
    assert parse_lifetime(text) == expected


@pytest.mark.parametrize("text", ["", "0h", "0h0m", "1d", "-1h", "1.5h", "h", "30", "30m1h", " 1h"])
def test_parse_lifetime_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid lifetime"):
        parse_lifetime(text)


def test_server_certificate_is_valid_for_every_service_name_and_only_for_servers(ca: CertifiedKey) -> None:
    assert NAMES == ["tumor", "tumor.clinic-a", "tumor.clinic-a.svc", "tumor.clinic-a.svc.cluster.local"]
    leaf = issue_server_certificate(ca, NAMES, now=NOW, lifetime=HOURS_720)
    for name in NAMES:
        server_verifier(ca, NOW, name).verify(leaf.certificate, [])
    with pytest.raises(VerificationError):
        server_verifier(ca, NOW, "tumor.other.svc").verify(leaf.certificate, [])
    with pytest.raises(VerificationError):  # serverAuth only: not usable as a client certificate
        client_verifier(ca, NOW).verify(leaf.certificate, [])


def test_client_certificate_names_the_client_and_is_only_for_clients(ca: CertifiedKey) -> None:
    leaf = issue_client_certificate(ca, "frontend", now=NOW, lifetime=HOURS_720)
    verified = client_verifier(ca, NOW).verify(leaf.certificate, [])
    assert verified.chain[-1] == ca.certificate
    assert leaf.certificate.subject.rfc4514_string() == "CN=frontend"
    usage = leaf.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_certificates_are_refused_after_their_lifetime(ca: CertifiedKey) -> None:
    leaf = issue_client_certificate(ca, "frontend", now=NOW, lifetime=timedelta(hours=1))
    client_verifier(ca, NOW + timedelta(minutes=59)).verify(leaf.certificate, [])
    with pytest.raises(VerificationError):
        client_verifier(ca, NOW + timedelta(minutes=61)).verify(leaf.certificate, [])


def test_ca_may_sign_leaves_only(ca: CertifiedKey) -> None:
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert ca.certificate.subject.rfc4514_string() == "CN=securemodel CA clinic-a/tumor,O=securemodel"


def test_no_certificate_outlives_its_ca() -> None:
    short_ca = new_ca("tumor", "clinic-a", now=NOW, lifetime=timedelta(hours=10))
    with pytest.raises(ValueError, match="would outlive its CA"):
        issue_client_certificate(short_ca, "frontend", now=NOW, lifetime=timedelta(hours=11))


def test_renewal_is_due_when_less_than_a_third_of_the_lifetime_is_left(ca: CertifiedKey) -> None:
    cert = issue_server_certificate(ca, NAMES, now=NOW, lifetime=HOURS_720).cert_pem
    assert not renewal_due(cert, NOW, HOURS_720)
    assert not renewal_due(cert, NOW - timedelta(minutes=1), HOURS_720)  # a clock slightly behind
    assert not renewal_due(cert, NOW + timedelta(hours=479), HOURS_720)
    assert renewal_due(cert, NOW + timedelta(hours=481), HOURS_720)
    assert renewal_due(cert, NOW + timedelta(hours=800), HOURS_720)  # expired


def test_renewal_is_due_when_the_lifetime_was_shortened(ca: CertifiedKey) -> None:
    cert = issue_server_certificate(ca, NAMES, now=NOW, lifetime=HOURS_720).cert_pem
    assert renewal_due(cert, NOW + timedelta(hours=1), timedelta(hours=24))


def test_age_and_time_left_count_from_the_moment_of_issue_to_expiry(ca: CertifiedKey) -> None:
    cert = issue_client_certificate(ca, "frontend", now=NOW, lifetime=HOURS_720).cert_pem
    assert age(cert, NOW) == timedelta(0)  # not from the backdated notBefore
    assert age(cert, NOW + timedelta(hours=5)) == timedelta(hours=5)
    assert time_left(cert, NOW + timedelta(hours=5)) == timedelta(hours=715)
    assert time_left(cert, NOW + timedelta(hours=721)) == timedelta(hours=-1)


def test_split_certificates_returns_each_certificate_of_a_bundle(ca: CertifiedKey) -> None:
    leaf = issue_client_certificate(ca, "frontend", now=NOW, lifetime=HOURS_720)
    assert split_certificates(ca.cert_pem + leaf.cert_pem) == [ca.cert_pem, leaf.cert_pem]
    for malformed in (b"", b"garbage", ca.cert_pem[:100]):
        with pytest.raises(ValueError):
            split_certificates(malformed)


def test_issued_by_tells_certificates_of_a_replaced_ca(ca: CertifiedKey) -> None:
    cert = issue_client_certificate(ca, "frontend", now=NOW, lifetime=HOURS_720).cert_pem
    successor = new_ca("tumor", "clinic-a", now=NOW, lifetime=timedelta(days=365))
    assert issued_by(cert, ca)
    assert not issued_by(cert, successor)


def test_repr_never_shows_key_material(ca: CertifiedKey) -> None:
    leaf = issue_client_certificate(ca, "frontend", now=NOW, lifetime=HOURS_720)
    for shown in (repr(leaf), str(leaf), repr(ca), repr([leaf, ca])):
        assert "PRIVATE" not in shown
        assert all(
            line.decode() not in shown for line in leaf.key_pem.splitlines()[1:-1] + ca.key_pem.splitlines()[1:-1]
        )
    assert repr(leaf).startswith("CertifiedKey(subject='CN=frontend', serial=")


def test_pem_round_trip_checks_that_key_and_certificate_belong_together(ca: CertifiedKey) -> None:
    leaf = issue_client_certificate(ca, "frontend", now=NOW, lifetime=HOURS_720)
    assert CertifiedKey(cert_pem=leaf.cert_pem, key_pem=leaf.key_pem) == leaf
    with pytest.raises(ValueError, match="does not belong to the certificate of CN=frontend") as raised:
        CertifiedKey(cert_pem=leaf.cert_pem, key_pem=ca.key_pem)
    assert "PRIVATE" not in str(raised.value)
    with pytest.raises(ValueError, match="not an unencrypted PEM key"):
        CertifiedKey(cert_pem=leaf.cert_pem, key_pem=b"garbage")


def test_tls_secret_data_has_the_files_the_server_and_clients_mount(ca: CertifiedKey) -> None:
    leaf = issue_client_certificate(ca, "frontend", now=NOW, lifetime=HOURS_720)
    assert tls_secret_data(leaf, ca.cert_pem) == {
        "tls.crt": leaf.cert_pem,
        "tls.key": leaf.key_pem,
        "ca.crt": ca.cert_pem,
    }


def test_times_must_be_timezone_aware(ca: CertifiedKey) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        issue_client_certificate(ca, "frontend", now=NOW.replace(tzinfo=None), lifetime=HOURS_720)
