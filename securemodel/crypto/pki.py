"""The per-model PKI: one CA per SecureModel, a server certificate, one client certificate per client.

Security guarantees:
- Keys are EC P-256 (ECDSA with SHA-256), which every OpenSSL build and Python's ``ssl`` accept
  for mutual TLS. Keys are generated here and leave only as PEM in a ``CertifiedKey``, whose
  ``repr`` shows the subject, serial and expiry, never the key.
- The CA may sign leaves only (``pathLength=0``). Server certificates carry the Service's DNS names
  and the ``serverAuth`` usage only; client certificates carry the client's name as CN and the
  ``clientAuth`` usage only, so neither can stand in for the other in a handshake.
- No certificate outlives the CA that signs it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
CA_CERT = "ca.crt"

# notBefore is backdated by this much so that a peer whose clock is slightly behind accepts a fresh
# certificate; the lifetime is counted from the moment of issue, not from notBefore.
CLOCK_SKEW = timedelta(minutes=5)

_LIFETIME = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


@dataclass(frozen=True, repr=False)
class CertifiedKey:
    """A PEM certificate and the PEM (PKCS#8, unencrypted) private key it certifies.

    Construction checks that both parse and that the key belongs to the certificate.
    """

    cert_pem: bytes
    key_pem: bytes

    def __post_init__(self) -> None:
        if self.private_key.public_key() != self.certificate.public_key():
            raise ValueError(f"the private key does not belong to the certificate of {self._subject()}")

    @cached_property
    def certificate(self) -> x509.Certificate:
        """The parsed certificate."""
        return x509.load_pem_x509_certificate(self.cert_pem)

    @cached_property
    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The parsed private key."""
        try:
            key = serialization.load_pem_private_key(self.key_pem, password=None)
        except (ValueError, TypeError):
            raise ValueError("the private key is not an unencrypted PEM key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"the key of {self._subject()} is not an EC key")
        return key

    def _subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    def __repr__(self) -> str:
        cert = self.certificate
        return (
            f"CertifiedKey(subject={self._subject()!r}, serial={cert.serial_number:x}, "
            f"not_after={cert.not_valid_after_utc.isoformat()})"
        )


def parse_lifetime(text: str) -> timedelta:
    """Parse a certificate lifetime such as ``720h``, ``90m`` or ``1h30m`` (hours, minutes, seconds)."""
    match = _LIFETIME.match(text)
    if not text or match is None:
        raise ValueError(f"invalid lifetime {text!r}: expected hours, minutes and seconds such as 720h, 90m or 1h30m")
    hours, minutes, seconds = (int(group or 0) for group in match.groups())
    lifetime = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    if lifetime <= timedelta(0):
        raise ValueError(f"invalid lifetime {text!r}: must be longer than zero")
    return lifetime


def renewal_due(cert_pem: bytes, now: datetime, lifetime: timedelta) -> bool:
    """Whether a certificate must be re-issued now, for a configured ``lifetime``.

    The rule: renew once less than a third of ``lifetime`` is left before notAfter (a 720h
    certificate is renewed 240h before it expires), and also renew when more than ``lifetime`` is
    left (beyond ``CLOCK_SKEW`` of tolerance), which means the lifetime was shortened.
    """
    remaining = time_left(cert_pem, now)
    return remaining < lifetime / 3 or remaining > lifetime + CLOCK_SKEW


def time_left(cert_pem: bytes, now: datetime) -> timedelta:
    """Time from ``now`` until the certificate expires (notAfter); negative once it has expired."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc - _utc(now)


def age(cert_pem: bytes, now: datetime) -> timedelta:
    """Time since the certificate was issued here (notBefore is backdated by ``CLOCK_SKEW``)."""
    return _utc(now) - (x509.load_pem_x509_certificate(cert_pem).not_valid_before_utc + CLOCK_SKEW)


def split_certificates(pem: bytes) -> list[bytes]:
    """The PEM certificates of a bundle, one PEM each; ValueError if it holds none or is malformed."""
    return [cert.public_bytes(serialization.Encoding.PEM) for cert in x509.load_pem_x509_certificates(pem)]


def issued_by(cert_pem: bytes, ca: CertifiedKey) -> bool:
    """Whether ``ca`` signed the certificate (false after the CA was replaced: re-issue it)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    try:
        cert.verify_directly_issued_by(ca.certificate)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def service_dns_names(model: str, namespace: str) -> list[str]:
    """The DNS names of the model's Service, as clients inside the cluster may address it."""
    return [model, f"{model}.{namespace}", f"{model}.{namespace}.svc", f"{model}.{namespace}.svc.cluster.local"]


def new_ca(model: str, namespace: str, *, now: datetime, lifetime: timedelta) -> CertifiedKey:
    """A new self-signed CA for one SecureModel; it may sign end-entity certificates only."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "securemodel"),
            # A CN is at most 64 characters; a namespace (63) and a model name (50) can exceed it.
            x509.NameAttribute(NameOID.COMMON_NAME, f"securemodel CA {namespace}/{model}"[:64]),
        ]
    )
    builder = (
        _validity(x509.CertificateBuilder(), now, lifetime)
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return _certified(builder.sign(key, hashes.SHA256()), key)


def issue_server_certificate(
    ca: CertifiedKey, dns_names: Sequence[str], *, now: datetime, lifetime: timedelta
) -> CertifiedKey:
    """A server certificate for ``dns_names`` (see ``service_dns_names``), usable for ``serverAuth`` only."""
    if not dns_names:
        raise ValueError("a server certificate needs at least one DNS name")
    return _issue(
        ca,
        dns_names[0],
        now=now,
        lifetime=lifetime,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=x509.SubjectAlternativeName([x509.DNSName(name) for name in dns_names]),
    )


def issue_client_certificate(ca: CertifiedKey, client: str, *, now: datetime, lifetime: timedelta) -> CertifiedKey:
    """A client certificate with CN ``client``, usable for ``clientAuth`` only."""
    return _issue(ca, client, now=now, lifetime=lifetime, usage=ExtendedKeyUsageOID.CLIENT_AUTH, san=None)


def tls_secret_data(leaf: CertifiedKey, trusted_ca_pem: bytes) -> dict[str, bytes]:
    """The files of a TLS Secret: ``tls.crt``, ``tls.key`` and ``ca.crt``.

    ``trusted_ca_pem`` is one CA certificate, or several concatenated to trust old and new CA
    side by side while a CA is being replaced.
    """
    return {TLS_CERT: leaf.cert_pem, TLS_KEY: leaf.key_pem, CA_CERT: trusted_ca_pem}


def _issue(
    ca: CertifiedKey,
    common_name: str,
    *,
    now: datetime,
    lifetime: timedelta,
    usage: x509.ObjectIdentifier,
    san: x509.SubjectAlternativeName | None,
) -> CertifiedKey:
    ca_cert = ca.certificate
    if _utc(now) + lifetime > ca_cert.not_valid_after_utc:
        raise ValueError(
            f"a certificate valid until {_utc(now) + lifetime:%Y-%m-%dT%H:%M:%SZ} would outlive its CA "
            f"(valid until {ca_cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}): renew the CA first"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _validity(x509.CertificateBuilder(), now, lifetime)
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return _certified(builder.sign(ca.private_key, hashes.SHA256()), key)


def _validity(builder: x509.CertificateBuilder, now: datetime, lifetime: timedelta) -> x509.CertificateBuilder:
    if lifetime <= timedelta(0):
        raise ValueError("a certificate lifetime must be longer than zero")
    issued = _utc(now)
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(issued - CLOCK_SKEW)
        .not_valid_after(issued + lifetime)
    )


def _key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _certified(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertifiedKey:
    return CertifiedKey(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return moment.astimezone(UTC)
