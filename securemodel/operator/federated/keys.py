"""The Secrets that hold a FederatedRound's keys, decided from what is stored (pure: no API calls).

* ``<round>-data-key``: the round's AES-256-GCM data key (``data.key``) for its global models.
* ``<round>-ca``: the round's CA (``tls.crt``/``tls.key``); no pod mounts it.
* ``<round>-superlink-tls``: the SuperLink's certificate for its Service names and the loopback
  names (:func:`securemodel.workers.federated.credentials.issue_superlink_certificate`), and ``ca.crt``.
* ``<round>-<silo>-supernode`` in each silo's namespace: the silo's SuperNode authentication key
  (``auth.key``, OpenSSH) and the round's ``ca.crt``. Only the silo's pod mounts it.
* ``<round>-silo-keys``: every silo's *public* key as ``<silo>.pub``, derived from the keys above, so
  the SuperLink admits exactly the round's silos, each with the key its own Secret holds.

A round lives at most its rounds × timeout: its CA and certificate are issued for twice that (at
least a day) and never renewed. Nothing is ever regenerated while its Secret exists: a CA Secret
that cannot be read raises :class:`~securemodel.operator.secure_model.keys.UnreadableAuthority`.
Nothing here logs or formats key material.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from securemodel.crypto.artifacts import new_data_key
from securemodel.crypto.pki import CertifiedKey, new_ca, service_dns_names, tls_secret_data
from securemodel.operator.federated import children
from securemodel.operator.federated.children import AUTH_KEY, CA_CERT
from securemodel.operator.federated.spec import RoundSpec
from securemodel.operator.secure_model.children import DATA_KEY, Owner, secret_bytes
from securemodel.operator.secure_model.keys import UnreadableAuthority, Write, load_ca
from securemodel.workers.federated.credentials import issue_superlink_certificate, new_supernode_key

MIN_LIFETIME = timedelta(days=1)
Stored = Mapping[tuple[str, str], Mapping[str, object]]  # (namespace, name) -> Secret


def lifetime(spec: RoundSpec) -> timedelta:
    return max(MIN_LIFETIME, 2 * timedelta(seconds=children.run_seconds(spec) + children.GRACE_SECONDS))


def public_key(private_openssh: bytes) -> bytes | None:
    """The OpenSSH public key line of an OpenSSH EC private key (None if it is not one)."""
    try:
        key = serialization.load_ssh_private_key(private_openssh, password=None)
    except (ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"


def wanted_secrets(owner: Owner, spec: RoundSpec, stored: Stored, now: datetime) -> list[Write]:
    """The key Secrets to create, CA first (a certificate is never written before the CA that signs it),
    and the public-keys Secret to create or replace; fed back as ``stored``, no writes.

    Raises:
        UnreadableAuthority: if the CA Secret exists without a readable CA.
    """
    ns = owner.namespace
    writes: list[Write] = []
    if (ns, children.data_key_secret_name(owner.name)) not in stored:
        body = children.secret(owner, children.data_key_secret_name(owner.name), "data-key", {DATA_KEY: new_data_key()})
        writes.append(Write(body, replace=False))
    ca_name = children.ca_secret_name(owner.name)
    ca_stored = stored.get((ns, ca_name))
    ca: CertifiedKey | None = load_ca(ca_stored)
    if ca_stored is not None and ca is None:
        raise UnreadableAuthority(f"Secret {ca_name} holds no readable CA (tls.crt and tls.key)")
    if ca is None:
        ca = new_ca(owner.name, ns, now=now, lifetime=lifetime(spec))
        writes.append(Write(children.secret(owner, ca_name, "ca", {"tls.crt": ca.cert_pem, "tls.key": ca.key_pem}), False))
    tls_name = children.tls_secret_name(owner.name)
    if (ns, tls_name) not in stored or ca_stored is None:
        names = service_dns_names(children.service_name(owner.name), ns)
        leaf = issue_superlink_certificate(ca, names, now=now, lifetime=lifetime(spec))
        body = children.secret(owner, tls_name, children.AGGREGATOR, tls_secret_data(leaf, ca.cert_pem))
        writes.append(Write(body, replace=(ns, tls_name) in stored))
    public: dict[str, bytes] = {}
    for silo in spec.silos:
        name = children.supernode_secret_name(owner.name, silo.name)
        held = stored.get((silo.namespace, name))
        private = secret_bytes(held, AUTH_KEY) if held is not None else None
        derived = public_key(private) if private else None
        if held is None or derived is None or secret_bytes(held, CA_CERT) != ca.cert_pem:
            key = new_supernode_key()
            private, derived = key.private_openssh, key.public_openssh
            body = children.secret(owner, name, children.SUPERNODE, {AUTH_KEY: private, CA_CERT: ca.cert_pem},
                                   silo.namespace, **{children.SILO_LABEL: silo.name})  # fmt: skip
            writes.append(Write(body, replace=held is not None))
        public[f"{silo.name}.pub"] = derived
    keys_name = children.silo_keys_secret_name(owner.name)
    keys_stored = stored.get((ns, keys_name))
    current = {key: secret_bytes(keys_stored, key) for key in (keys_stored or {}).get("data") or {}} if keys_stored else None
    if current != public:
        writes.append(Write(children.secret(owner, keys_name, children.AGGREGATOR, public), replace=keys_stored is not None))
    return writes
