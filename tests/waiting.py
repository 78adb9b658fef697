"""How tests wait for what should happen: on an event where there is one, else by polling, and
always against one generous deadline.

A wait that passes costs nothing more for a long deadline, and a loaded machine is slow: a
command that takes a fraction of a second may take several. Only a wait that never ends runs
into :data:`WAIT` (and pytest-timeout stops a whole test after 60 s). Tests do not assert
that something took *less* than some time; where speed is the point, they compare against the
slow way (a grace period, a sleep) made far longer than :data:`WAIT`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

WAIT = 30.0
"""Seconds to wait for an event, a log line, a row, a process to end or a command to finish."""

POLL = 0.05


def wait_until(
    check: Callable[[], T | None],
    what: str,
    *,
    timeout: float = WAIT,
    details: Callable[[], str] = lambda: "",
) -> T:
    """Poll *check* until it returns something truthy and return that; fail after *timeout*
    seconds saying *what* was waited for, and the *details*."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{details()}")
        time.sleep(POLL)
