"""Waiting in tests for a condition to hold: poll it, never sleep a fixed time instead."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "", interval: float = 0.2) -> Any:
    """Poll ``check`` every ``interval`` s until it returns something truthy, and return that; AssertionError naming
    ``what`` once ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
        time.sleep(interval)
