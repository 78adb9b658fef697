"""Data-quality checks during an attempt: what ``run.check`` records (from the loop or from
a ``def`` task's thread), and the ``@flow.check`` functions run on a task's result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import anyio

from runtime.define.checks import CheckResult, QualityCheckError, judge, raised
from runtime.define.context import Run
from runtime.define.task import Branch
from runtime.engine.events import CheckFailed
from runtime.engine.liverun import LiveRun
from runtime.engine.units import Unit


def check_sink(x: LiveRun, unit: Unit, attempt: int) -> Callable[[CheckResult], None]:
    """What ``run.check`` calls: records the check on the event loop's thread, also when a
    ``def`` task calls it from its worker thread."""
    loop = asyncio.get_running_loop()
    home = threading.get_ident()

    def record(result: CheckResult) -> None:
        if threading.get_ident() == home:
            record_check(x, unit, attempt, result)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(record_check, x, unit, attempt, result)

    return record


def record_check(x: LiveRun, unit: Unit, attempt: int, result: CheckResult) -> None:
    now = x.clock.now()
    x.rec.check(unit, attempt, now, result)
    if not result.passed and x.bus:
        node = unit.node
        x.bus.publish(
            CheckFailed(
                now,
                x.run_id,
                x.flow.name,
                unit.label,
                node.name,
                unit.index,
                attempt,
                result.name,
                result.detail,
                result.severity,
            )
        )


async def judge_attempt(
    x: LiveRun, unit: Unit, attempt: int, result: Any, kwargs: dict[str, Any]
) -> QualityCheckError | None:
    """Run the ``@flow.check`` functions of *unit*'s task on *result* and return the error
    that fails the attempt when any ``severity="error"`` check failed (these and the failed
    ``run.check`` calls of the attempt), else ``None``."""
    run = kwargs.get("run")
    failed = list(run.failed_checks) if isinstance(run, Run) else []
    checks = x.flow.checks.get(unit.node.name) if x.flow.checks else None
    if checks and not isinstance(result, Branch):
        for check in checks:
            try:
                if check.is_async:
                    value = await check.func(result)
                else:
                    limiter = x.engine.thread_limiter
                    value = await anyio.to_thread.run_sync(
                        check.func, result, limiter=limiter, abandon_on_cancel=True
                    )
                outcome = judge(check, value)
            except Exception as exc:  # noqa: BLE001 - a check that raises has failed
                outcome = raised(check, exc)
            record_check(x, unit, attempt, outcome)
            if not outcome.passed and outcome.severity == "error":
                failed.append(outcome)
    if not failed:
        return None
    said = [f"{c.name} ({c.detail})" if c.detail else c.name for c in failed]
    return QualityCheckError(f"failed check{'s' if len(said) > 1 else ''}: {'; '.join(said)}")
