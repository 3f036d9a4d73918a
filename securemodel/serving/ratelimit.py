"""Per-client request rate limits: one token bucket per client name."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from securemodel.serving.allowlist import RateLimit


class TokenBucket:
    """Holds at most ``limit.burst`` tokens, refilled continuously at ``limit.requests_per_second``."""

    __slots__ = ("limit", "_tokens", "_updated")

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._updated = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if there was one, else the seconds until there will be one (none taken)."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.limit.requests_per_second

    def change(self, limit: RateLimit, now: float) -> None:
        """Apply a new limit from now on, keeping the tokens earned so far (at most the new burst)."""
        self._refill(now)
        self.limit = limit
        self._tokens = min(self._tokens, float(limit.burst))

    def _refill(self, now: float) -> None:
        earned = (now - self._updated) * self.limit.requests_per_second
        self._tokens = min(float(self.limit.burst), self._tokens + earned)
        self._updated = now


class RateLimiter:
    """One token bucket per client; a client without a limit is always admitted.

    Guarantee: over any interval of ``t`` seconds a client with limit (r, b) is admitted at most
    ``b + r·t`` times, as long as its limit does not change.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, client: str, limit: RateLimit | None) -> float:
        """Admit one request of ``client``: 0.0 if admitted, else the seconds until it would be."""
        if limit is None:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(limit, now)
        elif bucket.limit != limit:
            bucket.change(limit, now)
        return bucket.take(now)

    def retain(self, clients: Iterable[str]) -> None:
        """Forget the buckets of clients other than ``clients`` (those no longer on the list)."""
        keep = set(clients)
        for name in [name for name in self._buckets if name not in keep]:
            del self._buckets[name]
