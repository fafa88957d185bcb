"""Polling for a condition that other processes bring about (workers, servers)."""

import time


def wait_until(predicate, *, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    """Return the first truthy value of `predicate()`; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
