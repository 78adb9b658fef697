"""Sluiceway: what a flow file imports, and nothing more."""

from __future__ import annotations

from runtime.define.context import Run
from runtime.define.flow import Flow
from runtime.define.options import OnCrash, RunIf, TaskOptions
from runtime.define.result import RunResult
from runtime.define.sources import files, on_event, on_flow, source
from runtime.define.task import Branch
from runtime.define.triggers import CatchupPolicy, cron, every
from runtime.errors import Retry, Skip

__all__ = [
    "Branch",
    "CatchupPolicy",
    "Flow",
    "OnCrash",
    "Retry",
    "Run",
    "RunIf",
    "RunResult",
    "Skip",
    "TaskOptions",
    "cron",
    "every",
    "files",
    "on_event",
    "on_flow",
    "source",
]
