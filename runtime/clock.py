"""The clock: the only place that reads wall time; tests inject their own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Where the runtime gets "now" and how it waits; inject a fake one in tests."""

    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait *seconds* (retry delays, schedules)."""
        ...


class SystemClock:
    """Wall time from the operating system; sleeps on the event loop."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        import anyio

        await anyio.sleep(seconds)


class FakeClock:
    """A clock for tests: time moves only when told; ``sleep`` returns at once and advances it.

    Every requested sleep is kept in :attr:`sleeps`, so a test can assert on backoff delays
    without waiting for them.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        import anyio

        self.sleeps.append(seconds)
        self.advance(seconds)
        await anyio.lowlevel.checkpoint()
