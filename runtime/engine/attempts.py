"""One attempt of a task: its arguments, the call (in a thread for a ``def``) under its timeout,
then what it comes to (``rules.attempt_outcome`` decides) recorded: success, skip, retry,
failure, cancel or interrupt."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from datetime import datetime, timedelta
from typing import Any

import anyio

from runtime.abc import AttemptCall
from runtime.define.context import Run, TaskLogger
from runtime.define.task import Branch, Task
from runtime.engine import loopwatch
from runtime.engine.events import TaskRetrying, TaskStarted
from runtime.engine.liverun import LiveRun
from runtime.engine.quality import check_sink, judge_attempt
from runtime.engine.recording import describe_error, format_error
from runtime.engine.rules import CallEnd, Outcome, S, attempt_outcome
from runtime.engine.threads import ThreadCall
from runtime.engine.units import Unit
from runtime.errors import TaskTimeoutError

log = logging.getLogger("sluiceway.runtime.engine")

# an async attempt that returns this much past its timeout kept the timeout from firing (it
# blocked the loop, or caught the cancel): it fails. Less is the loop's own lateness: the
# step that returns may run just after the deadline, before the timeout's callback.
OVERRUN_GRACE = 0.1


async def run_attempt(x: LiveRun, unit: Unit) -> float | None:
    """One attempt: begun, called, decided (``rules.attempt_outcome``), recorded. Returns the
    delay before the next attempt, or None when the unit is done (or waits, interrupted).

    The attempt is an isolation boundary: whatever the task raises (``SystemExit`` from
    ``sys.exit()``, ``KeyboardInterrupt``, any ``BaseException``) fails the attempt and
    nothing else. Only a cancel of this attempt's own scopes (its run cancelled or
    interrupted) ends it as a cancel; a stop from outside is raised again once recorded.
    """
    attempt, began = _begin(x, unit)
    task = unit.node.task
    end = CallEnd()
    remote = task.remote is not None  # an executor plugin calls the body (executor="dask")
    call = None if task.is_async or remote else ThreadCall()
    me = asyncio.current_task()
    if me is not None:  # a blocked loop names the task whose code it runs
        loopwatch.attempts[me] = (x.run_id, x.flow.name, unit.label, attempt)
    try:
        kwargs = build_kwargs(x, unit, attempt)
        with anyio.CancelScope() as scope:
            unit.scope = scope
            if task.timeout is None:  # the local call stays a direct await: the hot path
                if remote:
                    end.result = await call_remote(x, unit, attempt, kwargs)
                else:
                    end.result = await invoke(task, kwargs, x.engine.thread_limiter, call)
            else:
                end.result = await _within_timeout(x, unit, kwargs, call, attempt)
            if task.name in x.flow.checks or (task.wants_run and kwargs["run"].failed_checks):
                end.error = await judge_attempt(x, unit, attempt, end.result, kwargs)
        end.cancelled = scope.cancelled_caught
    except BaseException as exc:  # noqa: BLE001 - raised again below when from outside
        if _cancelled_from_outside(exc, me):
            end.stopped = exc
        else:
            end.error = exc  # whatever the task raised, SystemExit and the like included
    finally:
        unit.scope = None
        if me is not None:
            loopwatch.attempts.pop(me, None)
        if call is not None and call.running:
            x.lingering[unit] = call  # abandoned: it keeps the slots until it really ends
    if end.error is None and not end.cancelled and isinstance(end.result, Branch):
        end.error = x.apply_branch(unit.node, end.result)  # it may name only direct downstream
    outcome = attempt_outcome(
        end,
        attempt,
        task.retry,
        cancelling=x.cancelling,
        interrupting=x.interrupting,
        rng=x.engine.rng,
    )
    _record(x, unit, attempt, outcome, began, propagate=end.stopped is None)
    if end.stopped is not None:
        raise end.stopped
    return outcome.delay


def _begin(x: LiveRun, unit: Unit) -> tuple[int, datetime]:
    """Count and record the attempt as running; its number and start."""
    unit.where = None
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
        node = unit.node
        x.bus.publish(
            TaskStarted(now, x.run_id, x.flow.name, unit.label, node.name, unit.index, attempt)
        )
    return attempt, now


async def _within_timeout(
    x: LiveRun, unit: Unit, kwargs: dict[str, Any], call: ThreadCall | None, attempt: int
) -> Any:
    """The call under its task's timeout: running past it, or returning too late for it to
    fire, raises TaskTimeoutError (a remote call is cancelled, which frees its worker)."""
    task = unit.node.task
    assert task.timeout is not None
    began = anyio.current_time()
    result = None
    with anyio.move_on_after(task.timeout) as deadline:
        if task.remote is not None:
            result = await call_remote(x, unit, attempt, kwargs)
        else:
            result = await invoke(task, kwargs, x.engine.thread_limiter, call)
    if deadline.cancelled_caught:
        raise TaskTimeoutError(f"attempt {attempt} timed out after {task.timeout:g}s")
    took = anyio.current_time() - began
    # an async body here can block the loop past its timeout; a remote one cannot
    if call is None and task.remote is None and took > task.timeout + OVERRUN_GRACE:
        raise TaskTimeoutError(_overran(attempt, task.timeout, took, deadline))
    return result


def _record(
    x: LiveRun, unit: Unit, attempt: int, outcome: Outcome, began: datetime, *, propagate: bool
) -> None:
    """Record what the attempt came to, and end the unit unless it is tried again."""
    now = x.clock.now()
    state, error = outcome.state, outcome.error
    if error is None:  # it ended: succeeded, skipped or cancelled
        x.rec.attempt(unit, attempt, state, now, None)
        x.settle(
            unit, state, now, result=outcome.result, reason=outcome.reason, propagate=propagate
        )
        if state is S.SUCCEEDED:
            log.debug(
                "run=%s flow=%s task=%s attempt=%d succeeded in %.3fs",
                x.run_id,
                x.flow.name,
                unit.label,
                attempt,
                (now - began).total_seconds(),
            )
    elif state is S.PENDING:  # interrupted: the attempt is spent; the task waits, pending
        x.rec.attempt(unit, attempt, S.FAILED, now, error, interrupted=True)
        unit.state = S.PENDING
        unit.error = describe_error(error)
        x.rec.task(unit, None)
    else:
        _record_failure(x, unit, attempt, error, outcome.delay, now)


def _record_failure(
    x: LiveRun, unit: Unit, attempt: int, error: BaseException, delay: float | None, now: datetime
) -> None:
    """A failed attempt: retried after *delay* seconds, or the unit fails (*delay* None)."""
    text = describe_error(error)
    x.rec.attempt(unit, attempt, S.FAILED, now, error)
    if delay is None:
        x.rec.log(unit, attempt, now, "ERROR", format_error(error))
        log.warning(
            "run=%s flow=%s task=%s attempt=%d failed: %s",
            x.run_id,
            x.flow.name,
            unit.label,
            attempt,
            text,
        )
        x.settle(unit, S.FAILED, now, error=text)
        return
    unit.state = S.RETRYING
    unit.error = text
    x.rec.task(unit, now + timedelta(seconds=delay))
    x.rec.log(
        unit, attempt, now, "WARNING", f"attempt {attempt} failed: {text}; retrying in {delay:.3g}s"
    )
    name = unit.node.name
    x.bus.publish(
        TaskRetrying(now, x.run_id, x.flow.name, unit.label, name, unit.index, attempt, delay, text)
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


def attempt_key(x: LiveRun, unit: Unit, attempt: int, token: str) -> str:
    """A key unique to one attempt: readable in Dask's dashboard as ``flow.task``."""
    return f"{x.flow.name}.{unit.label}-r{x.run_id}-a{attempt}-{token}"


async def call_remote(x: LiveRun, unit: Unit, attempt: int, kwargs: dict[str, Any]) -> Any:
    """Call *unit*'s body through its task's executor; where it ran lands in ``unit.where``."""
    task = unit.node.task
    assert task.remote is not None
    executors = x.engine.executors
    call = AttemptCall(
        x.run_id,
        x.flow.name,
        unit.label,
        attempt,
        attempt_key(x, unit, attempt, executors.token),
        is_async=task.is_async,
        resources=task.resources,
    )
    try:
        return await executors.get(task.remote).call(task.func, kwargs, call)
    finally:
        unit.where = call.where


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


def build_kwargs(x: LiveRun, unit: Unit, attempt: int) -> dict[str, Any]:
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
            on_check=check_sink(x, unit, attempt),
        )
    return kwargs
