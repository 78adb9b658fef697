"""Helpers for testing flows and the runtime: fake clocks and a runner on a given file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from runtime.clock import Clock, FakeClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.result import RunResult
from runtime.engine.events import EventBus
from runtime.engine.runner import Runner, open_runner

__all__ = ["BlockingClock", "FakeClock", "open_test_runner", "run_flow"]


class BlockingClock(FakeClock):
    """A fake clock whose ``sleep`` blocks until the test moves time to its end.

    :class:`FakeClock` returns from every sleep at once. This one holds the sleeper (a task
    waiting to retry, the scheduler or the SLA monitor between passes) so that the test can
    look at the state while it waits, and then let it go with :meth:`advance`. A sleep that
    the test never advances past lasts until it is cancelled. A sleep of 0 or less returns at
    once. Every requested sleep is kept in :attr:`sleeps`, as with FakeClock.

    The test waits for the code under test to reach a sleep, rather than for some time:

    - :meth:`wait_sleeping`: until *count* sleeps are pending;
    - :meth:`wait_for_sleeps`: until the pending sleeps end exactly at the given times;
    - :meth:`wait_naps`: until *count* sleeps have begun in all (:attr:`naps`);
    - :meth:`step`: advance, then wait until the sleeper has gone back to sleep (a loop made
      one pass).

    Each wait fails with :class:`TimeoutError` after :attr:`timeout` seconds of real time
    (generous: a loaded machine is slow, a loop that never sleeps again is a bug).
    """

    def __init__(self, start: datetime | None = None, *, timeout: float = 30.0) -> None:
        super().__init__(start)
        self.timeout = timeout
        self._pending: list[tuple[datetime, anyio.Event]] = []
        self._changed = anyio.Event()

    @property
    def naps(self) -> int:
        """How many sleeps have begun, including those of 0 seconds."""
        return len(self.sleeps)

    @property
    def pending(self) -> list[datetime]:
        """When each pending sleep ends, earliest first."""
        return sorted(end for end, _ in self._pending)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        end = self.now() + timedelta(seconds=max(seconds, 0.0))
        if end <= self.now():
            self._notify()
            await anyio.lowlevel.checkpoint()
            return
        entry = (end, anyio.Event())
        self._pending.append(entry)
        self._notify()
        try:
            await entry[1].wait()
        finally:
            self._pending.remove(entry)
            self._notify()

    def advance(self, seconds: float) -> None:
        """Move time on by *seconds* and wake every sleep that ends by then."""
        super().advance(seconds)
        for end, woken in self._pending:
            if end <= self.now():
                woken.set()
        self._notify()

    async def wait_sleeping(self, count: int = 1) -> None:
        """Return once at least *count* sleeps are pending."""
        await self._wait_until(lambda: len(self._pending) >= count, f"{count} sleeps")

    async def wait_for_sleeps(self, *until: datetime) -> None:
        """Return once the pending sleeps end exactly at *until* (none given: nobody sleeps)."""
        wanted = sorted(until)
        await self._wait_until(lambda: self.pending == wanted, f"sleeps until {wanted}")

    async def wait_naps(self, count: int) -> None:
        """Return once *count* sleeps have begun in all."""
        await self._wait_until(lambda: self.naps >= count, f"{count} naps")

    async def step(self, seconds: float) -> None:
        """Advance while the loop sleeps; return when it has begun its next sleep."""
        naps = self.naps
        self.advance(seconds)
        await self.wait_naps(naps + 1)

    async def _wait_until(self, done: Callable[[], bool], what: str) -> None:
        try:
            with anyio.fail_after(self.timeout):
                while not done():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"waited {self.timeout:g}s for {what}; now {self.now().isoformat()}, "
                f"{self.naps} naps, pending until {self.pending}"
            ) from None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()


@asynccontextmanager
async def open_test_runner(
    db: str | Path,
    *,
    clock: Clock | None = None,
    pools: Mapping[str, int] | None = None,
    max_concurrency: int = 32,
    bus: EventBus | None = None,
    flush_interval: float = 0.01,
    executors: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[Runner]:
    """A :class:`~runtime.engine.runner.Runner` on the SQLite file *db* (created if missing).

    :param executors: ``[executors.<plugin>]`` options by plugin name (``{"dask": {...}}``)
    """
    config = Config(
        db=Path(db),
        pools=dict(pools or {}),
        max_concurrency=max_concurrency,
        flush_interval=flush_interval,
        executors=dict(executors or {}),
    )
    async with open_runner(config, clock=clock or FakeClock(), bus=bus) as runner:
        yield runner


async def run_flow(
    flow: Flow, db: str | Path, params: Mapping[str, Any] | None = None, **options: Any
) -> RunResult:
    """Run *flow* once against *db* and return the finished run; *options* as above."""
    async with open_test_runner(db, **options) as runner:
        return await runner.run(flow, params)
