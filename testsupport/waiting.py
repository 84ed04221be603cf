"""Polling for a condition that becomes true in another thread or process, with a bound."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> None:
    """Return once ``condition()`` is true; fail the test naming ``what`` after ``timeout`` s. A condition
    that raises OSError or ValueError (a process restarting, a half-written answer) counts as not yet."""
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        with contextlib.suppress(OSError, ValueError):
            if condition():
                return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
