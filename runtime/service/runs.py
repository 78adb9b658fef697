"""The runs the service executes now: each a child of the service's runs task group."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from anyio.abc import TaskGroup

from runtime.define.flow import Flow
from runtime.engine.handle import RunHandle
from runtime.service.context import ServiceContext

log = logging.getLogger("sluiceway.runtime.service")


class ActiveRuns:
    """Starts claimed and resumed runs as children of the runs task group, and keeps the
    handle of each until it ends, to cancel or interrupt it."""

    def __init__(self, ctx: ServiceContext, on_end: Callable[[], None]) -> None:
        self.ctx = ctx
        self.on_end = on_end  # after a run ended: the service's status line
        self.handles: dict[int, RunHandle] = {}
        self.group: TaskGroup | None = None  # set by Service.run before any run starts

    def __len__(self) -> int:
        return len(self.handles)

    def __contains__(self, run_id: int) -> bool:
        return run_id in self.handles

    def start(self, flow: Flow, run_id: int, claimed: Mapping[str, Any] | None = None) -> None:
        """Execute a claimed run, or resume an orphan (*claimed* is None), as a child."""
        assert self.group is not None
        handle = self.handles[run_id] = RunHandle()
        self.group.start_soon(self._execute, flow, run_id, handle, claimed, name=f"run {run_id}")

    def cancel(self, run_id: int) -> None:
        """Cancel run *run_id* softly (a request from another process), once."""
        handle = self.handles.get(run_id)
        if handle is not None and not handle.cancel_requested:
            log.info("run=%s cancel requested", run_id)
            handle.cancel()

    def interrupt_all(self) -> None:
        """Stop every run at once; each is resumed at the next start."""
        for handle in list(self.handles.values()):
            handle.interrupt()

    async def _execute(
        self, flow: Flow, run_id: int, handle: RunHandle, claimed: Mapping[str, Any] | None
    ) -> None:
        runner = self.ctx.runner
        try:
            if claimed is None:
                await runner.resume(flow, run_id, handle=handle)
            else:
                await runner.run_claimed(flow, run_id, claimed, handle=handle)
        except Exception:  # one run is an isolation boundary: report it, keep serving
            log.exception("run=%s flow=%s stopped with an internal error", run_id, flow.name)
        finally:
            self.handles.pop(run_id, None)
            self.ctx.wake_queue()
            self.on_end()
