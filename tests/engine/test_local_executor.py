"""The local executor behind the plugin contract: found by name, same behaviour as the engine's
direct path (async on the loop, def on a daemon thread)."""

from __future__ import annotations

import threading

from runtime import registry
from runtime.abc import AttemptCall
from runtime.engine.local import LocalExecutor


def attempt(*, is_async: bool) -> AttemptCall:
    return AttemptCall(1, "flow", "task", 1, "flow.task-r1-a1-x", is_async=is_async)


async def test_local_is_found_through_the_registry() -> None:
    assert registry.executor("local") is LocalExecutor
    assert "local" in registry.names("executor")
    assert "dask" in registry.names("executor")


async def test_def_bodies_run_on_a_daemon_thread_and_async_ones_on_the_loop() -> None:
    executor = LocalExecutor()
    loop_thread = threading.current_thread()

    def blocking(x: int) -> tuple[int, bool, bool]:
        me = threading.current_thread()
        return x + 1, me is loop_thread, me.daemon

    async def awaited(x: int) -> tuple[int, bool]:
        return x * 2, threading.current_thread() is loop_thread

    assert await executor.call(blocking, {"x": 1}, attempt(is_async=False)) == (2, False, True)
    assert await executor.call(awaited, {"x": 4}, attempt(is_async=True)) == (8, True)
    await executor.aclose()
