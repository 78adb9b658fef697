"""Sluiceway: what a flow file imports, and nothing more."""

from __future__ import annotations

from runtime.define.context import Run
from runtime.define.flow import Branch, Flow
from runtime.define.result import RunResult
from runtime.define.triggers import cron, every
from runtime.errors import Retry, Skip

__all__ = ["Branch", "Flow", "Retry", "Run", "RunResult", "Skip", "cron", "every"]
