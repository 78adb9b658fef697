"""Sluiceway: what a flow file imports, and nothing more."""

from __future__ import annotations

from runtime.context import Run
from runtime.errors import Retry, Skip
from runtime.flow import Branch, Flow
from runtime.result import RunResult
from runtime.triggers import cron, every

__all__ = ["Branch", "Flow", "Retry", "Run", "RunResult", "Skip", "cron", "every"]
