"""Per-round credentials: the SuperLink's TLS certificate and the SuperNodes' authentication keys.

Security guarantees:
- The SuperLink certificate is signed by the round's CA (:func:`securemodel.crypto.pki.new_ca`),
  usable for ``serverAuth`` only, and names the Service's DNS names plus ``localhost`` and
  ``127.0.0.1``: the processes inside the aggregator pod (Flower's SuperExec, the ServerApp, the
  run submission) reach the same listener over the loopback interface.
- A SuperNode key is a fresh EC P-384 key (Flower accepts NIST curves), in OpenSSH format as
  ``flower-supernode --auth-supernode-private-key`` and ``flwr supernode register`` read it. Only
  the public half goes to the aggregator; the SuperLink admits a node only if its requests are
  signed by a registered key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from securemodel.crypto.pki import CLOCK_SKEW, CertifiedKey

LOOPBACK_NAMES = ("localhost",)
LOOPBACK_ADDRESSES = ("127.0.0.1",)


@dataclass(frozen=True, repr=False)
class SuperNodeKey:
    """An OpenSSH private key (unencrypted) and its OpenSSH public key line."""

    private_openssh: bytes
    public_openssh: bytes

    def __repr__(self) -> str:
        return f"SuperNodeKey({self.public_openssh.split()[0].decode()}, private key hidden)"


def new_supernode_key() -> SuperNodeKey:
    """A fresh SuperNode authentication key pair."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return SuperNodeKey(private, public + b"\n")


def issue_superlink_certificate(
    ca: CertifiedKey, dns_names: Sequence[str], *, now: datetime, lifetime: timedelta
) -> CertifiedKey:
    """A ``serverAuth`` certificate for ``dns_names`` and the loopback names, signed by ``ca``."""
    names = list(dict.fromkeys([*dns_names, *LOOPBACK_NAMES]))
    key = ec.generate_private_key(ec.SECP256R1())
    san = [x509.DNSName(name) for name in names] + [
        x509.IPAddress(ipaddress.ip_address(address)) for address in LOOPBACK_ADDRESSES
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + lifetime, ca.certificate.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .sign(ca.private_key, hashes.SHA256())
    )
    return CertifiedKey(
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
