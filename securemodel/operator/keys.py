"""The Secrets that hold a SecureModel's keys, decided from what is stored (pure: no API calls).

* ``<model>-data-key``: 32 random bytes (``data.key``), the AES-256-GCM key of its artifacts.
* ``<model>-ca``: the model's CA (``tls.crt``, ``tls.key``), lifetime :data:`CA_LIFETIME_FACTOR`
  times the certificate lifetime.
* ``<model>-tls``: the serving certificate for the Service's DNS names, and ``ca.crt``.
* ``<model>-client-<name>``: one client certificate per ``spec.serving.clients`` entry.

:func:`wanted_secrets` returns only the Secrets that must be (re)written: missing ones,
certificates not issued by the current CA, and certificates due for renewal
(:func:`securemodel.crypto.pki.renewal_due`). Nothing here logs or formats key material.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from securemodel.crypto.artifacts import new_data_key
from securemodel.crypto.pki import (
    CA_CERT,
    TLS_CERT,
    TLS_KEY,
    CertifiedKey,
    issue_client_certificate,
    issue_server_certificate,
    issued_by,
    new_ca,
    parse_lifetime,
    renewal_due,
    service_dns_names,
    tls_secret_data,
)
from securemodel.operator.children import (
    CLIENT_LABEL,
    Owner,
    ca_secret_name,
    client_secret_name,
    data_key_secret,
    data_key_secret_name,
    secret,
    secret_bytes,
    tls_secret_name,
)

# Setting this annotation on a SecureModel to a new value re-issues its server and client
# certificates once (a forced rotation); the value is recorded on the Secrets it wrote.
ROTATE_ANNOTATION: Final = "securemodel.io/rotate-certificates"
ROTATION_ANNOTATION: Final = "securemodel.io/rotation"
# The CA outlives its leaves by far (pki requires at least 3x); it is not renewed by the operator.
CA_LIFETIME_FACTOR: Final = 10
DEFAULT_LIFETIME: Final = "720h"


@dataclass(frozen=True)
class Write:
    """A Secret to create (``replace`` False) or replace (True)."""

    body: dict[str, Any]
    replace: bool


def lifetime_of(spec: Mapping[str, Any]) -> timedelta:
    return parse_lifetime((spec.get("serving") or {}).get("certificateLifetime") or DEFAULT_LIFETIME)


def clients_of(spec: Mapping[str, Any]) -> list[str]:
    return list((spec.get("serving") or {}).get("clients") or [])


def load_ca(stored: Mapping[str, Any] | None) -> CertifiedKey | None:
    """The CA a stored ``<model>-ca`` Secret holds, or None if it is missing or unreadable."""
    if stored is None:
        return None
    cert, key = secret_bytes(stored, TLS_CERT), secret_bytes(stored, TLS_KEY)
    if not cert or not key:
        return None
    try:
        return CertifiedKey(cert, key)
    except ValueError:
        return None


def _leaf_due(stored: Mapping[str, Any] | None, ca: CertifiedKey, now: datetime, lifetime: timedelta) -> bool:
    if stored is None:
        return True
    cert = secret_bytes(stored, TLS_CERT)
    if not cert or not secret_bytes(stored, TLS_KEY) or secret_bytes(stored, CA_CERT) != ca.cert_pem:
        return True
    try:
        return not issued_by(cert, ca) or renewal_due(cert, now, lifetime)
    except ValueError:
        return True


def wanted_secrets(
    owner: Owner,
    spec: Mapping[str, Any],
    stored: Mapping[str, Mapping[str, Any]],
    now: datetime,
    *,
    force_renewal: bool = False,
    rotation: str | None = None,
) -> list[Write]:
    """The key Secrets to write, given the ``stored`` Secrets of the model by name.

    ``force_renewal`` re-issues every leaf certificate (same CA), as a rotation would.
    ``rotation`` is the model's :data:`ROTATE_ANNOTATION`: leaves not yet issued for it are re-issued.
    """
    writes: list[Write] = []
    if data_key_secret_name(owner.name) not in stored:
        writes.append(Write(data_key_secret(owner, new_data_key()), replace=False))
    lifetime = lifetime_of(spec)
    ca_name = ca_secret_name(owner.name)
    ca = load_ca(stored.get(ca_name))
    if ca is None:
        ca = new_ca(owner.name, owner.namespace, now=now, lifetime=lifetime * CA_LIFETIME_FACTOR)
        data = {TLS_CERT: ca.cert_pem, TLS_KEY: ca.key_pem}
        writes.append(Write(secret(owner, ca_name, "ca", data), replace=ca_name in stored))
    tls_name = tls_secret_name(owner.name)
    tls_stored = stored.get(tls_name) or {}
    if rotation and ((tls_stored.get("metadata") or {}).get("annotations") or {}).get(ROTATION_ANNOTATION) != rotation:
        force_renewal = True
    if force_renewal or _leaf_due(stored.get(tls_name), ca, now, lifetime):
        leaf = issue_server_certificate(ca, service_dns_names(owner.name, owner.namespace), now=now, lifetime=lifetime)
        body = secret(owner, tls_name, "tls", tls_secret_data(leaf, ca.cert_pem))
        writes.append(Write(body, replace=tls_name in stored))
    for client in clients_of(spec):
        name = client_secret_name(owner.name, client)
        if force_renewal or _leaf_due(stored.get(name), ca, now, lifetime):
            leaf = issue_client_certificate(ca, client, now=now, lifetime=lifetime)
            body = secret(owner, name, "client", tls_secret_data(leaf, ca.cert_pem), **{CLIENT_LABEL: client})
            writes.append(Write(body, replace=name in stored))
    if rotation:
        for write in writes:
            if write.body["metadata"]["name"] != ca_name:
                write.body["metadata"]["annotations"] = {ROTATION_ANNOTATION: rotation}
    return writes


def removed_clients(owner: Owner, spec: Mapping[str, Any], stored: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of stored client Secrets whose client is no longer in ``spec.serving.clients``."""
    wanted = {client_secret_name(owner.name, client) for client in clients_of(spec)}
    names = []
    for obj in stored:
        meta = obj["metadata"]
        if CLIENT_LABEL in (meta.get("labels") or {}) and meta["name"] not in wanted:
            names.append(meta["name"])
    return names
