"""The Secrets that hold a SecureModel's keys, decided from what is stored (pure: no API calls).

* ``<model>-data-key``: 32 random bytes (``data.key``), the AES-256-GCM key of its artifacts.
* ``<model>-ca``: the model's CAs, each valid :data:`CA_LIFETIME_FACTOR` times the certificate
  lifetime: ``tls.crt``/``tls.key`` is the CA that signs; ``next.crt``/``next.key`` its successor
  while it is being introduced; ``previous.crt`` the certificates (never the keys) of retired CAs
  that have not expired yet.
* ``<model>-tls``: the serving certificate for the Service's DNS names, and ``ca.crt``.
* ``<model>-client-<name>``: one client certificate per ``spec.serving.clients`` entry, ``ca.crt``, and
  ``previous.crt``: the certificates (never the keys) routine re-issues replaced that have not expired.

Every ``ca.crt`` is the trust bundle: the signing CA, its successor, then the retired CAs. The
server verifies client certificates against its ``ca.crt``; clients verify the server against theirs.

CA rollover, with L the certificate lifetime:

1. When the signing CA is due for renewal (:func:`securemodel.crypto.pki.renewal_due` over the CA's
   own lifetime: less than a third of it left, or more left than the spec's lifetime gives), a
   successor is created and added to every ``ca.crt``; certificates are still signed by the current CA.
2. Once the successor has been in the bundle for L, it signs: every certificate is re-issued from
   it, and the retired CA's certificate stays in every ``ca.crt`` (its key is discarded).
3. A retired CA is dropped from the bundle once it has expired.

Guarantee: a CA signs nothing before it has been in every ``ca.crt`` for L, and stays in every
``ca.crt`` until it expires, which no certificate it signed outlives. So a server or client that
reads its Secret at least once per L (anyone who keeps a valid certificate must) always trusts the
CA of the certificate the other side presents: nobody is refused because of a rollover.
Exceptions, replaced at once without that overlap: a missing or unreadable CA is re-created, and a
signing CA that can no longer sign a certificate of lifetime L (the operator stopped for long, or
the lifetime was lengthened) gives way to its successor or a new CA (and stays trusted until it
expires).

:func:`wanted_secrets` returns only the Secrets that must be (re)written: missing ones, a changed
set of CAs, certificates whose ``ca.crt`` is not the current bundle or that are not issued by the
signing CA, and certificates due for renewal. Nothing here logs or formats key material.

Which client certificates the serving pods answer (:func:`allow_list`): for each client in
``spec.serving.clients``, the certificate its Secret holds once this pass's writes are stored, and
those routine re-issues replaced (``previous.crt`` in the client's Secret, each until it expires,
so a client that has not re-read its Secret yet is not refused): routine renewals and CA
rollovers revoke nothing. A client removed from the spec is not listed at all, and a forced
rotation (:data:`ROTATE_ANNOTATION`) keeps no previous certificate: every certificate it replaced
is refused once the pods see the new list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from securemodel.crypto.artifacts import new_data_key
from securemodel.crypto.pki import (
    CA_CERT,
    TLS_CERT,
    TLS_KEY,
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
from securemodel.operator.secure_model.spec import ModelSpecs
from securemodel.serving.allowlist import RateLimit, allow_list_json, pod_rate_limits
from securemodel.operator.secure_model.children import (
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
# A CA lives this many certificate lifetimes (L). Its successor is introduced when a third of that
# is left (10/3 L) and signs one L later (7/3 L left, still more than the L a certificate needs).
CA_LIFETIME_FACTOR: Final = 10
DEFAULT_LIFETIME: Final = "720h"
# Keys of the ``<model>-ca`` Secret besides ``tls.crt``/``tls.key`` (the signing CA).
NEXT_CERT: Final = "next.crt"
NEXT_KEY: Final = "next.key"
PREVIOUS_CERTS: Final = "previous.crt"
# Key of a client Secret: the certificates routine re-issues replaced (never their keys), each still
# answered until it expires; a forced rotation writes none.
PREVIOUS_CLIENT_CERT: Final = "previous.crt"


@dataclass(frozen=True)
class Write:
    """A Secret to create (``replace`` False) or replace (True)."""

    body: dict[str, Any]
    replace: bool


@dataclass(frozen=True)
class Authority:
    """The model's CAs: ``current`` signs, ``next`` is its successor while being introduced, and
    ``previous`` are the PEM certificates of retired CAs, trusted until they expire.

    The ``repr`` shows certificates only (``CertifiedKey`` hides its key).
    """

    current: CertifiedKey
    next: CertifiedKey | None = None
    previous: tuple[bytes, ...] = ()

    @property
    def trusted(self) -> bytes:
        """The ``ca.crt`` of every certificate Secret: the signing CA, its successor, the retired CAs."""
        return b"".join([self.current.cert_pem, *([self.next.cert_pem] if self.next else []), *self.previous])

    def secret_data(self) -> dict[str, bytes]:
        """The files of the ``<model>-ca`` Secret."""
        data = {TLS_CERT: self.current.cert_pem, TLS_KEY: self.current.key_pem}
        if self.next:
            data |= {NEXT_CERT: self.next.cert_pem, NEXT_KEY: self.next.key_pem}
        if self.previous:
            data[PREVIOUS_CERTS] = b"".join(self.previous)
        return data


def lifetime_of(spec: ModelSpecs) -> timedelta:
    return parse_lifetime(spec.serving.certificate_lifetime or DEFAULT_LIFETIME)


class UnreadableAuthority(ValueError):
    """The ``<model>-ca`` Secret exists but holds no usable signing CA: it is never replaced silently."""


def load_ca(stored: Mapping[str, Any] | None) -> CertifiedKey | None:
    """The signing CA a stored ``<model>-ca`` Secret holds, or None if it is missing or unreadable."""
    return None if stored is None else _certified_key(stored, TLS_CERT, TLS_KEY)


def load_authority(stored: Mapping[str, Any] | None) -> Authority | None:
    """The CAs a stored ``<model>-ca`` Secret holds, or None if its signing CA is missing or
    unreadable. An unreadable successor or retired CA is left out."""
    current = load_ca(stored)
    if stored is None or current is None:
        return None
    return Authority(current, _certified_key(stored, NEXT_CERT, NEXT_KEY), _certificates(stored, PREVIOUS_CERTS))


def renewed_authority(owner: Owner, authority: Authority | None, now: datetime, lifetime: timedelta) -> Authority:
    """The CAs the model must have at ``now`` for a certificate ``lifetime``: the rollover of the
    module docstring. Equal to ``authority`` when nothing is due, so that nothing is written."""
    ca_lifetime = lifetime * CA_LIFETIME_FACTOR

    def fresh() -> CertifiedKey:
        return new_ca(owner.name, owner.namespace, now=now, lifetime=ca_lifetime)

    if authority is None:
        return Authority(fresh())
    current, successor = authority.current, authority.next
    previous = tuple(pem for pem in authority.previous if time_left(pem, now) > timedelta(0))
    if successor is not None and renewal_due(successor.cert_pem, now, ca_lifetime):
        successor = None  # made for another lifetime: introduce a new one
    if time_left(current.cert_pem, now) < lifetime:  # it cannot sign a certificate of this lifetime
        return _promoted(successor or fresh(), current, previous, now)
    if not renewal_due(current.cert_pem, now, ca_lifetime):
        return Authority(current, None, previous)
    if successor is None:
        return Authority(current, fresh(), previous)
    if age(successor.cert_pem, now) >= lifetime:
        return _promoted(successor, current, previous, now)
    return Authority(current, successor, previous)


def _promoted(successor: CertifiedKey, retired: CertifiedKey, previous: tuple[bytes, ...], now: datetime) -> Authority:
    kept = (retired.cert_pem,) if time_left(retired.cert_pem, now) > timedelta(0) else ()
    return Authority(successor, None, kept + previous)


def _certified_key(stored: Mapping[str, Any], cert_name: str, key_name: str) -> CertifiedKey | None:
    cert, key = secret_bytes(stored, cert_name), secret_bytes(stored, key_name)
    if not cert or not key:
        return None
    try:
        return CertifiedKey(cert, key)
    except ValueError:
        return None


def _certificates(stored: Mapping[str, Any], name: str) -> tuple[bytes, ...]:
    pem = secret_bytes(stored, name)
    if not pem:
        return ()
    try:
        return tuple(split_certificates(pem))
    except ValueError:
        return ()


def _secret_data(stored: Mapping[str, Any]) -> dict[str, bytes | None]:
    return {name: secret_bytes(stored, name) for name in stored.get("data") or {}}


def _leaf_due(
    stored: Mapping[str, Any] | None,
    ca: CertifiedKey,
    trusted: bytes,
    now: datetime,
    lifetime: timedelta,
    client: str | None = None,
) -> bool:
    """Whether a leaf Secret must be (re)issued; a client's also when its certificate does not name ``client``."""
    if stored is None:
        return True
    cert = secret_bytes(stored, TLS_CERT)
    if not cert or not secret_bytes(stored, TLS_KEY) or secret_bytes(stored, CA_CERT) != trusted:
        return True
    try:
        named = client is None or _names(cert, client)
        return not named or not issued_by(cert, ca) or renewal_due(cert, now, lifetime)
    except ValueError:
        return True


def wanted_secrets(
    owner: Owner,
    spec: ModelSpecs,
    stored: Mapping[str, Mapping[str, Any]],
    now: datetime,
    *,
    force_renewal: bool = False,
    rotation: str | None = None,
) -> list[Write]:
    """The key Secrets to write, given the ``stored`` Secrets of the model by name.

    The ``<model>-ca`` Secret comes before the certificates it signs and trusts, so that no
    ``ca.crt`` names a CA that was not stored. Fed back as ``stored`` at the same ``now`` (and
    without ``force_renewal``), the writes yield no writes.
    ``force_renewal`` re-issues every leaf certificate (same CA), as a rotation would.
    ``rotation`` is the model's :data:`ROTATE_ANNOTATION`: leaves not yet issued for it are re-issued.

    A CA is created only when its Secret does not exist: one that exists without a readable
    signing CA raises :class:`UnreadableAuthority` (the operator reports it; it never
    regenerates the CA under the clients' feet).
    """
    writes: list[Write] = []
    if data_key_secret_name(owner.name) not in stored:
        writes.append(Write(data_key_secret(owner, new_data_key()), replace=False))
    lifetime = lifetime_of(spec)
    ca_name = ca_secret_name(owner.name)
    ca_stored = stored.get(ca_name)
    loaded = load_authority(ca_stored)
    if ca_stored is not None and loaded is None:
        raise UnreadableAuthority(f"Secret {ca_name} holds no readable signing CA (tls.crt and tls.key)")
    authority = renewed_authority(owner, loaded, now, lifetime)
    ca_data = authority.secret_data()
    if ca_stored is None or _secret_data(ca_stored) != ca_data:
        writes.append(Write(secret(owner, ca_name, "ca", ca_data), replace=ca_stored is not None))
    ca, trusted = authority.current, authority.trusted

    def forced(name: str) -> bool:  # not yet re-issued for the model's forced rotation
        annotations = ((stored.get(name) or {}).get("metadata") or {}).get("annotations") or {}
        return force_renewal or (rotation is not None and annotations.get(ROTATION_ANNOTATION) != rotation)

    tls_name = tls_secret_name(owner.name)
    if forced(tls_name) or _leaf_due(stored.get(tls_name), ca, trusted, now, lifetime):
        leaf = issue_server_certificate(ca, service_dns_names(owner.name, owner.namespace), now=now, lifetime=lifetime)
        body = secret(owner, tls_name, "tls", tls_secret_data(leaf, trusted))
        writes.append(Write(body, replace=tls_name in stored))
    for client in spec.serving.clients:
        name = client_secret_name(owner.name, client)
        held = stored.get(name)
        revoke = forced(name)
        if revoke or _leaf_due(held, ca, trusted, now, lifetime, client):
            leaf = issue_client_certificate(ca, client, now=now, lifetime=lifetime)
            data = tls_secret_data(leaf, trusted)
            replaced = [] if revoke or held is None else _client_certificates(held, client, now)
            if replaced:
                data[PREVIOUS_CLIENT_CERT] = b"".join(replaced)
            body = secret(owner, name, "client", data, **{CLIENT_LABEL: client})
            writes.append(Write(body, replace=name in stored))
    if rotation:
        for write in writes:
            if write.body["metadata"]["name"] != ca_name:
                write.body["metadata"]["annotations"] = {ROTATION_ANNOTATION: rotation}
    return writes


def removed_clients(owner: Owner, spec: ModelSpecs, stored: Sequence[Mapping[str, Any]]) -> list[str]:
    """Names of stored client Secrets whose client is no longer in ``spec.serving.clients``."""
    wanted = {client_secret_name(owner.name, client) for client in spec.serving.clients}
    names = []
    for obj in stored:
        meta = obj["metadata"]
        if CLIENT_LABEL in (meta.get("labels") or {}) and meta["name"] not in wanted:
            names.append(meta["name"])
    return names



@dataclass(frozen=True)
class ClientLimits:
    """Each serving pod's share of ``spec.serving.clientLimits`` by client, and why a client's limit is
    unusable (such a client is refused: it is never answered unlimited)."""

    per_pod: Mapping[str, RateLimit] = field(default_factory=dict)
    invalid: Mapping[str, str] = field(default_factory=dict)


def client_limits(serving: Mapping[str, Any]) -> ClientLimits:
    """The limits of a SecureModel's raw ``spec.serving`` (the CRD's rules make an invalid one unlikely)."""
    per_pod: dict[str, RateLimit] = {}
    invalid: dict[str, str] = {}
    for item in serving.get("clientLimits") or ():
        name = str(item.get("name"))
        try:
            per_pod |= pod_rate_limits({**serving, "clientLimits": [item]})
        except (KeyError, TypeError, ValueError) as error:
            invalid[name] = f"it lacks {error.args[0]}" if isinstance(error, KeyError) else str(error)
    return ClientLimits(per_pod, invalid)


def allowed_certificates(
    owner: Owner, spec: ModelSpecs, stored: Mapping[str, Mapping[str, Any]], writes: Sequence[Write], now: datetime
) -> dict[str, list[bytes]]:
    """The PEM client certificates in force by client, once ``writes`` are stored (module docstring).

    Only clients of ``spec.serving.clients``; per client, the certificate of its Secret and those
    routine re-issues replaced, each only if it names the client (CN) and has not expired.
    """
    written = {write.body["metadata"]["name"]: write.body for write in writes}
    found: dict[str, list[bytes]] = {}
    for client in spec.serving.clients:
        held = written.get(client_secret_name(owner.name, client)) or stored.get(client_secret_name(owner.name, client))
        found[client] = [] if held is None else _client_certificates(held, client, now)
    return found


def allow_list(
    owner: Owner,
    spec: ModelSpecs,
    stored: Mapping[str, Mapping[str, Any]],
    writes: Sequence[Write],
    limits: ClientLimits,
    now: datetime,
) -> str:
    """The allow-list file (:func:`securemodel.serving.allowlist.allow_list_json`) of the model once
    ``writes`` are stored: the certificates of :func:`allowed_certificates` with each pod's share of
    the client's limit. A client whose limit is invalid is listed with no certificate (refused)."""
    certificates = allowed_certificates(owner, spec, stored, writes, now)
    for client in limits.invalid:
        if client in certificates:
            certificates[client] = []
    return allow_list_json(certificates, {name: limit for name, limit in limits.per_pod.items() if name in certificates})


def _client_certificates(secret_obj: Mapping[str, Any], client: str, now: datetime) -> list[bytes]:
    """The PEM certificate a client Secret holds, then those it lists as replaced, each once and only
    if it names ``client`` (CN) and has not expired."""
    found: list[bytes] = []
    for key in (TLS_CERT, PREVIOUS_CLIENT_CERT):
        pem = secret_bytes(secret_obj, key)
        try:
            certificates = split_certificates(pem) if pem else []
        except ValueError:
            continue
        for cert in certificates[:1] if key == TLS_CERT else certificates:
            if _names(cert, client) and time_left(cert, now) > timedelta(0) and cert not in found:
                found.append(cert)
    return found


def _names(cert_pem: bytes, client: str) -> bool:
    """Whether the certificate's CN is ``client``."""
    names = x509.load_pem_x509_certificate(cert_pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return bool(names) and names[0].value == client
