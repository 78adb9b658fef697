"""A flow run from Python (``Flow.run``/``Flow.arun``): one run against the configured store,
without the service."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from runtime.config import load_config
from runtime.define.flow import Flow
from runtime.define.result import RunResult
from runtime.engine.runner import open_runner

__all__ = ["arun_flow", "run_flow"]


def run_flow(flow: Flow, params: Mapping[str, Any]) -> RunResult:
    """Run *flow* to the end in a new event loop and return the finished run.

    The store and limits come from ``sluiceway.toml`` / ``SLUICEWAY_*`` (default
    ``./sluiceway.db``); *params* override the flow's params.
    """

    async def main() -> RunResult:
        return await arun_flow(flow, params)

    return anyio.run(main)


async def arun_flow(flow: Flow, params: Mapping[str, Any]) -> RunResult:
    """Like :func:`run_flow`, inside a running event loop."""
    async with open_runner(load_config()) as runner:
        return await runner.run(flow, params)
