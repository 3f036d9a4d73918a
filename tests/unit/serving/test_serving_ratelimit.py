"""The token buckets, on a clock the test moves."""

from __future__ import annotations

import pytest

from securemodel.serving.allowlist import RateLimit
from securemodel.serving.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def admitted(limiter: RateLimiter, client: str, limit: RateLimit | None, requests: int) -> int:
    return sum(limiter.take(client, limit) == 0.0 for _ in range(requests))


def test_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter, limit = RateLimiter(clock), RateLimit(requests_per_second=2.0, burst=5)
    assert admitted(limiter, "frontend", limit, 8) == 5
    assert limiter.take("frontend", limit) == pytest.approx(0.5)  # one token takes 1/rate
    clock.now += 0.25
    assert limiter.take("frontend", limit) == pytest.approx(0.25)
    clock.now += 0.25
    assert admitted(limiter, "frontend", limit, 3) == 1
    clock.now += 60  # refilled, but never beyond the burst
    assert admitted(limiter, "frontend", limit, 10) == 5


def test_over_a_long_run_no_more_than_burst_plus_rate_times_time() -> None:
    clock = Clock()
    limiter, limit = RateLimiter(clock), RateLimit(requests_per_second=10.0, burst=20)
    total = 0
    for _ in range(1000):  # 10 s in steps of 10 ms, 3 attempts per step
        total += admitted(limiter, "frontend", limit, 3)
        clock.now += 0.01
    assert 20 + 10 * 9.99 - 1 <= total <= 20 + 10 * 10.0


def test_clients_have_their_own_buckets_and_no_limit_means_unlimited() -> None:
    clock = Clock()
    limiter, limit = RateLimiter(clock), RateLimit(1.0, 2)
    assert admitted(limiter, "frontend", limit, 5) == 2
    assert admitted(limiter, "backend", limit, 5) == 2
    assert admitted(limiter, "batch", None, 1000) == 1000


def test_a_changed_limit_keeps_the_tokens_spent() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert admitted(limiter, "frontend", RateLimit(1.0, 10), 10) == 10
    # Raising the limit does not hand out a fresh burst; lowering it caps what is left.
    assert admitted(limiter, "frontend", RateLimit(1.0, 100), 5) == 0
    clock.now += 3
    assert admitted(limiter, "frontend", RateLimit(1.0, 2), 5) == 2


def test_a_forgotten_client_starts_again_with_a_full_bucket() -> None:
    clock = Clock()
    limiter, limit = RateLimiter(clock), RateLimit(1.0, 2)
    assert admitted(limiter, "frontend", limit, 3) == 2
    limiter.retain({"backend"})
    assert admitted(limiter, "frontend", limit, 3) == 2
