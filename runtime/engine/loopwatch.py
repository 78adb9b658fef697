"""Tells when something blocks the event loop, and which task it was.

A blocking call in an ``async def`` (``time.sleep``, a synchronous HTTP or database client)
stops every run, the scheduler and the store's writer until it returns, and the loop cannot
notice while it is blocked. So the loop only beats (a callback every :attr:`LoopWatch.period`)
and a daemon thread watches the beat: when it is late by more than the threshold, the thread
logs a warning naming the task whose code the loop is running (each attempt registers itself
in :data:`attempts`), and a second line with the total once the loop is back.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Self

# not under sluiceway.runtime: `sluiceway run` quiets those, and this warning is for the user
log = logging.getLogger("sluiceway.loop")

# the asyncio task running each attempt -> (run id, flow, task label, attempt); kept by
# runtime.engine.attempts for every attempt, so a blocked loop can be blamed on the task's code
attempts: dict[asyncio.Task[Any], tuple[int, str, str, int]] = {}


def culprit(task: asyncio.Task[Any] | None) -> str:
    """Who the loop is running: a task attempt, else the asyncio task's own name."""
    if task is None:
        return "no task (the event loop's own callbacks)"
    known = attempts.get(task)
    if known is not None:
        run_id, flow, label, attempt = known
        return f"task {label!r} of run {run_id} (flow {flow!r}, attempt {attempt})"
    return f"sluiceway's own code (asyncio task {task.get_name()!r}), not a task"


class LoopWatch:
    """Watches the running loop from a daemon thread; use as ``with LoopWatch(1.0):``.

    :param threshold: seconds the loop may be blocked before a warning; 0 watches nothing
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        # beat often enough to measure a stall of *threshold* to within a quarter of it
        self.period = min(max(threshold / 4, 0.01), 0.25)
        self._beat = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Self:
        if self.threshold > 0:
            self._loop = asyncio.get_running_loop()
            self._tick()
            self._thread = threading.Thread(
                target=self._watch, name="sluiceway-loopwatch", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._beat = time.monotonic()  # the loop runs this: a stall being reported is over
        self._stop.set()
        if self._handle is not None:
            self._handle.cancel()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _tick(self) -> None:  # on the loop
        self._beat = time.monotonic()
        assert self._loop is not None
        self._handle = self._loop.call_later(self.period, self._tick)

    def _watch(self) -> None:  # on the watching thread
        loop = self._loop
        assert loop is not None
        warned: float | None = None  # the beat of the stall that was reported
        blamed = ""
        stopping = False
        while not stopping:
            stopping = self._stop.wait(self.period)
            beat = self._beat
            stalled = time.monotonic() - beat - self.period  # the beat is due every period
            if warned is not None and beat != warned:  # the loop is back
                took = beat - warned - self.period
                log.warning("the event loop was blocked for about %.1fs by %s", took, blamed)
                warned = None
            if warned is None and stalled > self.threshold and not stopping:
                warned = beat
                blamed = culprit(asyncio.current_task(loop))
                log.warning(
                    "the event loop has been blocked for %.2fs by %s; every run waits meanwhile "
                    "(a blocking call in an async def? make it a def task, or await an async "
                    "version)",
                    stalled,
                    blamed,
                )
