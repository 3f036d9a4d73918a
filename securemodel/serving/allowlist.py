"""The allow-list file: which client certificates a serving pod answers, and how often.

The operator writes it into the model's ConfigMap; the serve worker reads it from the mounted
volume (``--allow-list``) and follows changes without a restart. Version 1 of the format, JSON::

    {"version": 1,
     "clients": [
       {"name": "frontend",
        "certificates": [{"serial": "5e0c1d...", "sha256": "9b41f0..."}],
        "rateLimit": {"requestsPerSecond": 25.0, "burst": 50}}]}

- ``name``: the client's name, which its certificates carry as their CN (a DNS-1123 label).
- ``certificates``: the certificates of the client that are in force (any number, including
  none); ``serial`` is the serial number in hexadecimal (either case, no ``0x``), ``sha256``
  (optional) the SHA-256 of the certificate's DER encoding in hexadecimal.
- ``rateLimit`` (optional): what one serving pod answers the client, a token bucket refilled at
  ``requestsPerSecond`` (> 0) that holds at most ``burst`` (≥ 1) requests. Without it the
  client is not limited.

Security guarantees:
- A certificate is admitted only if its serial is listed under the entry of its CN and, where the
  entry gives a ``sha256``, its DER encoding hashes to it.
- A file that is not exactly this format (unknown version or key, a malformed value, a name or a
  serial listed twice) is refused as a whole: nothing in it is used.
- The file holds no secret: serials and fingerprints are public parts of the certificates.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from securemodel.api.schema import DNS_LABEL

VERSION = 1
FILE_NAME = "allow-list.json"
_NAME = re.compile(DNS_LABEL)
_HEX = re.compile(r"^[0-9a-fA-F]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
_MAX_RATE = 1e9


@dataclass(frozen=True)
class RateLimit:
    """A token bucket: refilled at ``requests_per_second``, holding at most ``burst`` requests."""

    requests_per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (0 < self.requests_per_second <= _MAX_RATE) or not (1 <= self.burst <= _MAX_RATE):
            raise ValueError(f"a rate limit needs 0 < requestsPerSecond ≤ 1e9 and 1 ≤ burst ≤ 1e9, not {self}")

    def share(self, pods: int) -> RateLimit:
        """What each of ``pods`` pods allows so that together they allow at most this limit.

        The rate is divided evenly; the burst too, rounded up (at least one request per pod).
        """
        pods = max(pods, 1)
        return RateLimit(self.requests_per_second / pods, math.ceil(self.burst / pods))


@dataclass(frozen=True)
class Peer:
    """What the allow-list needs of a client certificate."""

    common_name: str | None
    serial: int
    sha256: bytes

    @classmethod
    def from_der(cls, der: bytes) -> Peer:
        """The peer of a DER certificate (as ``SSLObject.getpeercert(binary_form=True)`` gives it)."""
        cert = x509.load_der_x509_certificate(der)
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        name = names[0].value if names else None
        return cls(name if isinstance(name, str) else None, cert.serial_number, hashlib.sha256(der).digest())

    @cached_property
    def serial_hex(self) -> str:
        """The serial number in lowercase hexadecimal, as the allow-list and the logs write it."""
        return format(self.serial, "x")


@dataclass(frozen=True)
class AllowedClient:
    """A client on the allow-list."""

    name: str
    rate_limit: RateLimit | None


@dataclass(frozen=True)
class AllowList:
    """The clients on the list, and which certificate (serial, optional SHA-256) belongs to whom."""

    clients: Mapping[str, AllowedClient]
    certificates: Mapping[int, tuple[str, bytes | None]]

    def admit(self, peer: Peer) -> AllowedClient | None:
        """The client ``peer`` is, if its certificate is on the list; ``None`` otherwise."""
        listed = self.certificates.get(peer.serial)
        if listed is None:
            return None
        name, digest = listed
        if name != peer.common_name or (digest is not None and digest != peer.sha256):
            return None
        return self.clients[name]


def parse_allow_list(content: bytes) -> AllowList:
    """Parse and check an allow-list file; ``ValueError`` saying what is wrong if it is not valid."""
    try:
        document = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"not JSON: {type(err).__name__}: {err}") from None
    _keys(document, "the file", required={"version", "clients"})
    if document["version"] != VERSION:
        raise ValueError(f"version {document['version']!r} is not supported; this server reads version {VERSION}")
    entries = document["clients"]
    if not isinstance(entries, list):
        raise ValueError("'clients' must be a list")
    clients: dict[str, AllowedClient] = {}
    certificates: dict[int, tuple[str, bytes | None]] = {}
    for index, entry in enumerate(entries):
        where = f"clients[{index}]"
        _keys(entry, where, required={"name", "certificates"}, optional=frozenset({"rateLimit"}))
        name = entry["name"]
        if not isinstance(name, str) or len(name) > 63 or not _NAME.match(name):
            raise ValueError(f"{where}.name must be a DNS-1123 label, not {name!r}")
        if name in clients:
            raise ValueError(f"{where}: client {name!r} is listed twice")
        clients[name] = AllowedClient(name, _rate_limit(entry.get("rateLimit"), f"{where}.rateLimit"))
        if not isinstance(entry["certificates"], list):
            raise ValueError(f"{where}.certificates must be a list")
        for number, certificate in enumerate(entry["certificates"]):
            serial, digest = _certificate(certificate, f"{where}.certificates[{number}]")
            if serial in certificates:
                raise ValueError(f"{where}: serial {serial:x} is listed twice")
            certificates[serial] = (name, digest)
    return AllowList(clients, certificates)


def allow_list_json(certificates: Mapping[str, Sequence[bytes]], limits: Mapping[str, RateLimit]) -> str:
    """The allow-list file for clients and their PEM certificates in force, with ``limits`` per pod.

    Deterministic (clients sorted by name, certificates in the given order), so an unchanged list
    renders to the same text. ``ValueError`` if a certificate's CN is not its client's name.
    """
    entries: list[dict[str, Any]] = []
    for name in sorted(certificates):
        listed = []
        for pem in certificates[name]:
            peer = Peer.from_der(x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER))
            if peer.common_name != name:
                raise ValueError(f"a certificate of client {name!r} has CN {peer.common_name!r}")
            listed.append({"serial": peer.serial_hex, "sha256": peer.sha256.hex()})
        entry: dict[str, Any] = {"name": name, "certificates": listed}
        if name in limits:
            limit = limits[name]
            entry["rateLimit"] = {"requestsPerSecond": limit.requests_per_second, "burst": limit.burst}
        entries.append(entry)
    return json.dumps({"version": VERSION, "clients": entries}, indent=1) + "\n"


def pod_rate_limits(serving: Mapping[str, Any]) -> dict[str, RateLimit]:
    """Each serving pod's share of the limits in a SecureModel's ``spec.serving.clientLimits``.

    The spec's limit bounds a client across all ``replicas`` pods together (see ``RateLimit.share``).
    """
    pods = int(serving.get("replicas", 1) or 1)
    return {
        item["name"]: RateLimit(float(item["requestsPerSecond"]), int(item["burst"])).share(pods)
        for item in serving.get("clientLimits") or []
    }


def _keys(value: Any, where: str, *, required: set[str], optional: frozenset[str] = frozenset()) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be an object")
    missing = required - value.keys()
    unknown = value.keys() - required - optional
    if missing:
        raise ValueError(f"{where} lacks {', '.join(sorted(missing))}")
    if unknown:
        raise ValueError(f"{where} has unknown keys {', '.join(sorted(unknown))}")


def _rate_limit(value: Any, where: str) -> RateLimit | None:
    if value is None:
        return None
    _keys(value, where, required={"requestsPerSecond", "burst"})
    rate, burst = value["requestsPerSecond"], value["burst"]
    numbers = isinstance(rate, int | float) and isinstance(burst, int)
    if not numbers or isinstance(rate, bool) or isinstance(burst, bool):
        raise ValueError(f"{where} needs a number requestsPerSecond and an integer burst")
    try:
        return RateLimit(float(rate), burst)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


def _certificate(value: Any, where: str) -> tuple[int, bytes | None]:
    _keys(value, where, required={"serial"}, optional=frozenset({"sha256"}))
    serial, digest = value["serial"], value.get("sha256")
    if not isinstance(serial, str) or not _HEX.match(serial):
        raise ValueError(f"{where}.serial must be a hexadecimal serial number, not {serial!r}")
    if digest is not None and (not isinstance(digest, str) or not _SHA256.match(digest)):
        raise ValueError(f"{where}.sha256 must be 64 hexadecimal digits")
    return int(serial, 16), None if digest is None else bytes.fromhex(digest)
