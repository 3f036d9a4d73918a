"""The round's SuperLink certificate and the SuperNodes' keys, checked with Flower's own loaders."""

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID
from flwr.cli.supernode.register import try_load_public_key

from securemodel.crypto.pki import issued_by, new_ca
from securemodel.workers.federated.credentials import issue_superlink_certificate, new_supernode_key


def test_supernode_key_is_accepted_by_flowers_register_and_supernode_loaders(tmp_path: Path) -> None:
    key = new_supernode_key()
    public = tmp_path / "clinic-a.pub"
    public.write_bytes(key.public_openssh)
    assert try_load_public_key(public)  # what `flwr supernode register` reads
    private = load_ssh_private_key(key.private_openssh, None)  # what flower-supernode reads
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    assert "PRIVATE" not in repr(key) and "hidden" in repr(key)


def test_two_keys_differ() -> None:
    assert new_supernode_key().public_openssh != new_supernode_key().public_openssh


def test_superlink_certificate_names_the_service_and_loopback_for_server_auth_only() -> None:
    now = datetime.now(UTC)
    ca = new_ca("round-1", "research", now=now, lifetime=timedelta(hours=2))
    leaf = issue_superlink_certificate(ca, ["round-1-superlink.research.svc"], now=now, lifetime=timedelta(hours=1))
    cert = leaf.certificate
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["round-1-superlink.research.svc", "localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert issued_by(leaf.cert_pem, ca)
    assert cert.not_valid_after_utc <= ca.certificate.not_valid_after_utc
