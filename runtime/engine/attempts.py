"""One attempt of a task: its arguments, the call (in a thread for a ``def``), its timeout, and
what its outcome means: success, skip, retry or failure."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio

from runtime.define.context import Run, TaskLogger
from runtime.define.task import Branch, Task
from runtime.durations import parse_duration
from runtime.engine import loopwatch
from runtime.engine.events import TaskRetrying, TaskStarted
from runtime.engine.recording import describe_error, format_error
from runtime.engine.threads import ThreadCall
from runtime.engine.units import Unit
from runtime.errors import InterruptedRunError, Retry, Skip, TaskTimeoutError
from runtime.states import TaskState

if TYPE_CHECKING:
    from runtime.engine.execution import Execution

log = logging.getLogger("sluiceway.runtime.engine")

S = TaskState
# an async attempt that returns this much past its timeout kept the timeout from firing (it
# blocked the loop, or caught the cancel): it fails. Less is the loop's own lateness: the
# step that returns may run just after the deadline, before the timeout's callback.
OVERRUN_GRACE = 0.1


async def run_attempt(x: Execution, unit: Unit) -> float | None:
    """One attempt. Returns the delay before the next attempt, or None when it ended.

    The attempt is an isolation boundary: whatever the task raises (``SystemExit`` from
    ``sys.exit()``, ``KeyboardInterrupt``, any ``BaseException``) fails the attempt and
    nothing else. Only a cancel of this attempt's own scopes (its run cancelled or
    interrupted) ends it as a cancel.
    """
    node, task = unit.node, unit.node.task
    unit.attempts += 1  # counted before the call: a kill -9 mid-task still spends a try
    attempt = unit.attempts
    now = x.clock.now()
    if unit.started_at is None:
        unit.started_at = now
    unit.state = S.RUNNING
    unit.reason = None  # no longer waiting for a slot
    x.rec.task(unit, None)
    x.rec.attempt(unit, attempt, S.RUNNING, now, None)
    if x.bus:
        x.bus.publish(
            TaskStarted(now, x.run_id, x.flow.name, unit.label, node.name, unit.index, attempt)
        )
    error: BaseException | None = None
    result: Any = None
    scope: anyio.CancelScope | None = None
    call = None if task.is_async else ThreadCall()
    me = asyncio.current_task()
    if me is not None:  # a blocked loop names the task whose code it runs
        loopwatch.attempts[me] = (x.run_id, x.flow.name, unit.label, attempt)
    try:
        kwargs = build_kwargs(x, unit, attempt)
        with anyio.CancelScope() as scope:
            unit.scope = scope
            if task.timeout is None:
                result = await invoke(task, kwargs, x.engine.thread_limiter, call)
            else:
                began = anyio.current_time()
                with anyio.move_on_after(task.timeout) as deadline:
                    result = await invoke(task, kwargs, x.engine.thread_limiter, call)
                if deadline.cancelled_caught:
                    raise TaskTimeoutError(f"attempt {attempt} timed out after {task.timeout:g}s")
                took = anyio.current_time() - began
                if call is None and took > task.timeout + OVERRUN_GRACE:
                    raise TaskTimeoutError(_overran(attempt, task.timeout, took, deadline))
    except Skip as skip:
        unit.scope = None
        end = x.clock.now()
        x.rec.attempt(unit, attempt, S.SKIPPED, end, None)
        x.settle(unit, S.SKIPPED, end, reason=skip.reason)
        return None
    except BaseException as exc:  # one task attempt is an isolation boundary, whatever it raises
        if not _cancelled_from_outside(exc, me):
            error = exc  # whatever the task raised, SystemExit and the like included
        else:
            unit.scope = None
            end = x.clock.now()
            if x.interrupting:
                # the attempt is spent; the task waits, pending, for the next start
                error = InterruptedRunError("interrupted by service shutdown")
                x.rec.attempt(unit, attempt, S.FAILED, end, error, interrupted=True)
                unit.state = S.PENDING
                unit.error = f"InterruptedRunError: {error}"
                x.rec.task(unit, None)
                raise
            x.rec.attempt(unit, attempt, S.CANCELLED, end, None)
            x.settle(unit, S.CANCELLED, end, reason="run cancelled", propagate=False)
            raise
    finally:
        if me is not None:
            loopwatch.attempts.pop(me, None)
        if call is not None and call.running:
            x.lingering[unit] = call  # abandoned: it keeps the slots until it really ends
    unit.scope = None
    end = x.clock.now()
    if error is None and scope is not None and scope.cancelled_caught:
        x.rec.attempt(unit, attempt, S.CANCELLED, end, None)
        x.settle(unit, S.CANCELLED, end, reason="run cancelled")
        return None
    if error is None and isinstance(result, Branch):
        error = x.apply_branch(node, result)
    if error is None:
        x.rec.attempt(unit, attempt, S.SUCCEEDED, end, None)
        x.settle(unit, S.SUCCEEDED, end, result=result)
        log.debug(
            "run=%s flow=%s task=%s attempt=%d succeeded in %.3fs",
            x.run_id,
            x.flow.name,
            unit.label,
            attempt,
            (end - now).total_seconds(),
        )
        return None
    delay: float | None = None
    retriable = True
    if isinstance(error, Retry) and error.delay is not None:
        try:
            delay = parse_duration(error.delay, what="Retry delay")
        except ValueError as bad:
            # a bug in the task, not a failure another attempt could mend
            error = ValueError(str(bad)).with_traceback(error.__traceback__)
            retriable = False
    text = describe_error(error)
    x.rec.attempt(unit, attempt, S.FAILED, end, error)
    if retriable and not x.cancelling and task.retry.should_retry(error, attempt):
        if delay is None:
            delay = task.retry.delay_for(attempt, x.engine.rng)
        unit.state = S.RETRYING
        unit.error = text
        x.rec.task(unit, end + timedelta(seconds=delay))
        note = f"attempt {attempt} failed: {text}; retrying in {delay:.3g}s"
        x.rec.log(unit, attempt, end, "WARNING", note)
        x.bus.publish(
            TaskRetrying(
                end, x.run_id, x.flow.name, unit.label, node.name, unit.index, attempt, delay, text
            )
        )
        log.warning(
            "run=%s flow=%s task=%s attempt=%d failed: %s; retrying in %.3gs",
            x.run_id,
            x.flow.name,
            unit.label,
            attempt,
            text,
            delay,
        )
        return delay
    x.rec.log(unit, attempt, end, "ERROR", format_error(error))
    log.warning(
        "run=%s flow=%s task=%s attempt=%d failed: %s",
        x.run_id,
        x.flow.name,
        unit.label,
        attempt,
        text,
    )
    x.settle(unit, S.FAILED, end, error=text)
    return None


async def invoke(
    task: Task, kwargs: dict[str, Any], threads: anyio.CapacityLimiter, call: ThreadCall | None
) -> Any:
    if call is None:
        return await task.func(**kwargs)
    # a daemon thread: a timeout abandons it (no thread can be killed) and the run moves on,
    # and a thread still running never keeps the process from exiting
    result = await call.run(functools.partial(task.func, **kwargs), threads)
    if inspect.isawaitable(result):
        result = await result
    return result


def _cancelled_from_outside(exc: BaseException, me: asyncio.Task[Any] | None) -> bool:
    """True when *exc* cancels this attempt from outside (its run cancelled or interrupted,
    the process stopping), False when the task's own code raised it."""
    if isinstance(exc, asyncio.CancelledError):
        # a cancel of this asyncio task is pending (anyio takes back the cancels of the scopes
        # it caught, the timeout's and the soft cancel's); a task raising CancelledError
        # itself leaves none
        return me is None or me.cancelling() > 0
    if isinstance(exc, GeneratorExit):
        # thrown in by close() while the coroutine is destroyed, not raised by the task
        try:
            return asyncio.current_task() is not me
        except RuntimeError:  # no running loop
            return True
    return False


def _overran(attempt: int, timeout: float, took: float, deadline: anyio.CancelScope) -> str:
    """Why an attempt that returned past its timeout failed: the timeout could not fire."""
    if deadline.cancel_called:  # it fired, but the task caught the cancel and went on
        return (
            f"attempt {attempt} ran {took:.2f}s, past its timeout of {timeout:g}s: it caught "
            f"the timeout's cancellation and went on"
        )
    return (
        f"attempt {attempt} ran {took:.2f}s, past its timeout of {timeout:g}s: it blocked the "
        f"event loop, so the timeout could not fire (a blocking call such as time.sleep in an "
        f"async def; make it a def task or await an async version)"
    )


def build_kwargs(x: Execution, unit: Unit, attempt: int) -> dict[str, Any]:
    node, task = unit.node, unit.node.task
    nodes = x.nodes
    kwargs = {dep: nodes[dep].unit.result for dep in task.data_deps}
    if unit.idx >= 0:
        kwargs[task.map] = node.items[unit.idx]  # type: ignore[index]
    for name in task.flow_params:
        kwargs[name] = x.params[name]
    if task.wants_run:
        ident = (x.run_id, node.name, unit.idx, attempt)
        kwargs["run"] = Run(
            id=x.run_id,
            flow=x.flow.name,
            task=unit.label,
            index=unit.index,
            logical_date=x.logical_date,
            params=x.params,
            trigger=x.trigger,
            attempt=attempt,
            log=TaskLogger(x.store.add_log, ident, unit.label, x.clock.now),
        )
    return kwargs
