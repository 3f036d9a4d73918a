"""Who sent a request on the mutual-TLS port, and whether to answer it: the allow-list and rate limits.

Security guarantees:
- With an allow-list file, a request is answered only if the client certificate of its connection
  is on the list in force when the request arrives (see ``allowlist``); otherwise it is answered
  403 and its connection is closed, and nothing reaches the model. Python's ``ssl`` offers no
  certificate verification callback, so a certificate off the list still completes the handshake
  (which proves only that it chains to the model's CA); the check runs on every request, so a
  keep-alive connection opened before its certificate left the list is refused from its next
  request on.
- ``refresh`` (called on a timer by ``ServingServer``) re-reads the file and a changed, valid file
  is in force for the next request. A file that cannot be read or is not valid is ignored and the
  list in force stays: a half-written or mangled update neither lets anyone in nor shuts everyone
  out. At construction a missing or invalid file is an error.
- A client over its rate limit is answered 429 with ``Retry-After`` (whole seconds, at least 1).
- Without an allow-list file every certificate that passed the handshake is answered, unlimited.
"""

from __future__ import annotations

import hashlib
import logging
import math
import ssl
from dataclasses import dataclass
from pathlib import Path
from weakref import WeakKeyDictionary

from securemodel.serving.allowlist import AllowList, Peer, parse_allow_list
from securemodel.serving.metrics import ClientCounters, ServingMetrics
from securemodel.serving.ratelimit import RateLimiter

log = logging.getLogger(__name__)

FORBIDDEN = 403
TOO_MANY_REQUESTS = 429


@dataclass(frozen=True)
class Refusal:
    """Why a request is not answered: the HTTP status, the error message, and when to retry (429)."""

    status: int
    message: str
    retry_after: int | None = None


@dataclass(frozen=True)
class Verdict:
    """Who sent a request (``client``: the certificate's CN, ``-`` if none; ``serial`` in hex) and
    whether it is refused."""

    client: str
    serial: str | None
    refusal: Refusal | None


NO_CERTIFICATE = Verdict("-", None, Refusal(FORBIDDEN, "no client certificate"))


class ClientGate:
    """Admits the requests of the clients on the allow-list at ``allow_list`` (if given), within their limits."""

    def __init__(self, allow_list: Path | None, metrics: ServingMetrics) -> None:
        self._path = allow_list
        self._metrics = metrics
        self._limiter = RateLimiter()
        self._peers: WeakKeyDictionary[ssl.SSLObject, tuple[Peer, ClientCounters]] = WeakKeyDictionary()
        self._list: AllowList | None = None
        self._fingerprint = b""
        if allow_list is not None:
            content = allow_list.read_bytes()
            try:
                self._use(parse_allow_list(content), content)
            except ValueError as err:
                raise ValueError(f"the allow-list {allow_list} is not valid: {err}") from None

    def refresh(self) -> bool:
        """Load the allow-list file if it changed; return whether a new list is now in force."""
        if self._path is None:
            return False
        try:
            content = self._path.read_bytes()  # follows kubelet's ..data link to the current files
            if hashlib.sha256(content).digest() == self._fingerprint:
                return False
            self._use(parse_allow_list(content), content)
        except (OSError, ValueError) as err:
            self._metrics.allow_list_reloads.labels("rejected").inc()
            log.warning("ignoring the allow-list %s: %s; the previous list stays in force", self._path, err)
            return False
        self._metrics.allow_list_reloads.labels("loaded").inc()
        return True

    def check(self, connection: ssl.SSLObject | None) -> Verdict:
        """Identify the client of a request on ``connection`` and decide whether to answer it."""
        known = self._peer(connection)
        if known is None:
            return NO_CERTIFICATE
        peer, counters = known
        name = peer.common_name or "-"
        counters.requests.inc()
        if self._list is None:
            return Verdict(name, peer.serial_hex, None)
        client = self._list.admit(peer)
        if client is None:
            counters.refused.inc()
            return Verdict(name, peer.serial_hex, Refusal(FORBIDDEN, "this client certificate is not allowed"))
        wait = self._limiter.take(client.name, client.rate_limit)
        if wait > 0:
            counters.rate_limited.inc()
            refusal = Refusal(TOO_MANY_REQUESTS, f"client {name} is over its rate limit", max(1, math.ceil(wait)))
            return Verdict(name, peer.serial_hex, refusal)
        return Verdict(name, peer.serial_hex, None)

    def _peer(self, connection: ssl.SSLObject | None) -> tuple[Peer, ClientCounters] | None:
        """The client certificate of ``connection`` and its client's counters, found once per connection."""
        if connection is None:
            return None
        known = self._peers.get(connection)
        if known is None:
            der = connection.getpeercert(binary_form=True)
            if not der:
                return None
            peer = Peer.from_der(der)
            known = self._peers[connection] = (peer, self._metrics.client(peer.common_name or "-"))
        return known

    def _use(self, allow_list: AllowList, content: bytes) -> None:
        self._list = allow_list
        self._fingerprint = hashlib.sha256(content).digest()
        self._limiter.retain(allow_list.clients)
        self._metrics.allow_list_clients.set(len(allow_list.clients))
        limited = sum(client.rate_limit is not None for client in allow_list.clients.values())
        log.info(
            "allow-list %s in force: %d clients (%d rate-limited), %d certificates",
            self._path,
            len(allow_list.clients),
            limited,
            len(allow_list.certificates),
        )
