"""``def`` task bodies on daemon threads of Sluiceway's own.

anyio's worker threads are not daemon threads: a ``def`` task abandoned by its timeout kept
``sluiceway run`` alive until the function returned (15 s for a ``time.sleep(15)`` under
``timeout=1``). No Python code can stop a thread, so a timed-out call is left running, but on a
daemon thread, which never keeps the process from exiting. Until it really ends it keeps its
thread-limiter token, and the engine keeps its slots (see :meth:`ThreadCall.when_ended`).

Idle threads are reused, as anyio's are, and end after :data:`IDLE` seconds without work.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio

IDLE = 10.0  # seconds an idle thread waits for another call before it ends

Outcome = tuple[Any, BaseException | None]


class ThreadCall:
    """One call of a function on a daemon thread, awaited from the event loop.

    A cancel of :meth:`run` (a timeout, a cancelled run) abandons the call: the coroutine
    returns at once and the thread goes on. :attr:`running` stays true, and :attr:`ended` unset,
    until the function really returns.
    """

    __slots__ = ("_callbacks", "ended", "running")

    def __init__(self) -> None:
        self.running = False
        self.ended = anyio.Event()
        self._callbacks: list[Callable[[], None]] = []

    async def run(self, func: Callable[[], Any], limiter: anyio.CapacityLimiter) -> Any:
        """Call *func* on a daemon thread, under *limiter*; its result, or raise its error
        (whatever it raised, ``SystemExit`` and ``KeyboardInterrupt`` included)."""
        loop = asyncio.get_running_loop()
        await limiter.acquire_on_behalf_of(self)
        future: asyncio.Future[Outcome] = loop.create_future()
        context = contextvars.copy_context()  # like anyio: the task sees the caller's context

        def work() -> None:  # on the thread
            try:
                outcome: Outcome = (context.run(func), None)
            except BaseException as exc:  # noqa: BLE001 - delivered to the awaiting attempt
                outcome = (None, exc)
            try:
                loop.call_soon_threadsafe(self._finished, limiter, future, outcome)
            except RuntimeError:  # the loop is closed: nobody waits for it any more
                pass

        self.running = True
        try:
            _workers.submit(work)
        except BaseException:
            self.running = False
            limiter.release_on_behalf_of(self)
            raise
        value, error = await future  # cancelled here: the call is abandoned, the thread goes on
        if error is not None:
            try:
                raise error
            finally:
                del error  # no cycle through this frame
        return value

    def when_ended(self, callback: Callable[[], None]) -> None:
        """Call *callback* (on the loop) once the function returned; at once if it has."""
        if self.running:
            self._callbacks.append(callback)
        else:
            callback()

    def _finished(
        self,
        limiter: anyio.CapacityLimiter,
        future: asyncio.Future[Outcome],
        outcome: Outcome,
    ) -> None:  # on the loop
        self.running = False
        limiter.release_on_behalf_of(self)
        if not future.done():  # not abandoned
            future.set_result(outcome)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        self.ended.set()


class _Worker(threading.Thread):
    def __init__(self, pool: _Workers) -> None:
        super().__init__(name="sluiceway-task", daemon=True)
        self.pool = pool
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()

    def run(self) -> None:
        pool = self.pool
        while True:
            try:
                job = self.jobs.get(timeout=IDLE)
            except queue.Empty:
                with pool.lock:
                    if self in pool.idle:
                        pool.idle.remove(self)
                        return
                continue  # taken just now: its job is on the way
            job()  # never raises: the job delivers its own outcome
            del job
            with pool.lock:
                pool.idle.append(self)


class _Workers:
    """Daemon threads, reused while they are idle."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []

    def submit(self, job: Callable[[], None]) -> None:
        with self.lock:
            worker = self.idle.pop() if self.idle else None
        if worker is None:
            worker = _Worker(self)
            worker.start()
        worker.jobs.put(job)


_workers = _Workers()
