"""Slowing down password guessing: failed logins counted per remote address, in memory and
bounded; past a few, each failure locks that address out for twice as long as the last."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

FREE = 5  # failures allowed before the lockouts start
FIRST = 1.0  # seconds of the first lockout; each next failure doubles it
LONGEST = 900.0  # a lockout never lasts longer (15 min)
FORGET = 3600.0  # an address quiet this long after its lockout starts again from zero
SIZE = 10_000  # addresses remembered; past it the least recently seen is forgotten


@dataclass(slots=True)
class _Record:
    failures: int
    until: float  # locked out until (monotonic seconds)
    last: float  # the last failure


class LoginThrottle:
    """Failed logins per remote address (an IPv6 address counts by its /64: one machine
    usually holds the whole prefix).

    :param now: monotonic seconds (tests pass their own)
    """

    def __init__(self, now: Callable[[], float] = time.monotonic, size: int = SIZE) -> None:
        self.now = now
        self.size = size
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def wait(self, address: str | None) -> float:
        """Seconds before *address* may try again (0: now)."""
        key = _key(address)
        record = self._records.get(key)
        if record is None:
            return 0.0
        now = self.now()
        if now - max(record.last, record.until) > FORGET:
            del self._records[key]
            return 0.0
        return max(0.0, record.until - now)

    def failed(self, address: str | None) -> int:
        """Count a failure of *address*; returns its failures so far."""
        key = _key(address)
        now = self.now()
        record = self._records.pop(key, None) or _Record(0, 0.0, now)
        record.failures += 1
        record.last = now
        if record.failures > FREE:
            record.until = now + min(LONGEST, FIRST * 2 ** (record.failures - FREE - 1))
        self._records[key] = record  # the most recently seen is last
        while len(self._records) > self.size:
            self._records.popitem(last=False)
        return record.failures

    def succeeded(self, address: str | None) -> None:
        """*address* logged in: its failures are forgotten."""
        self._records.pop(_key(address), None)

    def __len__(self) -> int:
        return len(self._records)


def _key(address: str | None) -> str:
    if not address:
        return "?"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:  # a unix socket, a name: counted as given
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
