"""Helpers for testing flows and the runtime: a fake clock and a runner on a given file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from runtime.clock import Clock, FakeClock
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.result import RunResult
from runtime.engine.events import EventBus
from runtime.engine.runner import Runner, open_runner

__all__ = ["FakeClock", "open_test_runner", "run_flow"]


@asynccontextmanager
async def open_test_runner(
    db: str | Path,
    *,
    clock: Clock | None = None,
    pools: Mapping[str, int] | None = None,
    max_concurrency: int = 32,
    bus: EventBus | None = None,
    flush_interval: float = 0.01,
) -> AsyncIterator[Runner]:
    """A :class:`~runtime.engine.runner.Runner` on the SQLite file *db* (created if missing)."""
    config = Config(
        db=Path(db),
        pools=dict(pools or {}),
        max_concurrency=max_concurrency,
        flush_interval=flush_interval,
    )
    async with open_runner(config, clock=clock or FakeClock(), bus=bus) as runner:
        yield runner


async def run_flow(
    flow: Flow, db: str | Path, params: Mapping[str, Any] | None = None, **options: Any
) -> RunResult:
    """Run *flow* once against *db* and return the finished run; *options* as above."""
    async with open_test_runner(db, **options) as runner:
        return await runner.run(flow, params)
