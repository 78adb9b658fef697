"""The default executor, ``"local"``: an ``async def`` body awaited on the service's own event
loop, a ``def`` body on one of Sluiceway's daemon threads.

The engine takes this path directly for every task without ``executor=`` (no plugin lookup and
no extra await per attempt: the hot path); :class:`LocalExecutor` is the same behaviour behind
the :class:`~runtime.abc.Executor` contract, found through the registry like any executor, for
code that calls bodies through the contract (an embedding application, a wrapping plugin).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import anyio

from runtime.abc import AttemptCall, Executor
from runtime.engine.threads import ThreadCall

THREADS = 40  # like the engine's own limit on def bodies running at once


class LocalExecutor(Executor):
    """Bodies in this process: ``async def`` on the loop, ``def`` on a daemon thread (a
    cancelled ``def`` call is abandoned: no thread can be stopped)."""

    plugin: ClassVar[str] = "local"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options or {})
        self.threads = anyio.CapacityLimiter(THREADS)

    async def call(
        self, fn: Callable[..., Any], args: Mapping[str, Any], attempt: AttemptCall
    ) -> Any:
        if attempt.is_async:
            return await fn(**args)
        result = await ThreadCall().run(functools.partial(fn, **args), self.threads)
        if inspect.isawaitable(result):  # a def that returned an awaitable, as the engine does
            result = await result
        return result
