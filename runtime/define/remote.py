"""A task body called away from the service (on a Dask worker): the portable ``run`` context it
gets there, and what comes back to the service (its result or error, the ``run.log`` lines and
checks it made).

An executor plugin uses three functions: :func:`portable` on the service before shipping the
arguments, :func:`call_here` / :func:`acall_here` where the body runs, and :func:`deliver` on
the service with what came back. The lines and checks are stored with the attempt exactly as
a local task's are, with the times they were made at.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from runtime.clock import SystemClock
from runtime.define.checks import CheckResult
from runtime.define.context import Run, TaskLogger
from runtime.errors import ExecutorError

__all__ = [
    "RemoteError",
    "RunSpec",
    "Shipped",
    "acall_here",
    "call_here",
    "deliver",
    "failure",
    "portable",
]

RUN = "run"
Line = tuple[str, str, str]  # (ISO time, level, message)


class RemoteError(ExecutorError):
    """A task's exception that could not travel back as itself (it does not pickle): its
    type's name, message and traceback, as text."""

    def __init__(self, type_name: str, message: str, trace: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.trace = trace

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, str(self).partition(": ")[2], self.trace))


@dataclass(frozen=True, slots=True)
class RunSpec:
    """The fields of a :class:`~runtime.Run`, as plain data that pickles: what travels."""

    id: int
    flow: str
    task: str
    index: int | None
    logical_date: datetime
    params: dict[str, Any]
    trigger: dict[str, Any]
    attempt: int
    ident: tuple[int, str, int, int]  # (run_id, task name, idx, attempt) of its log lines


@dataclass(slots=True)
class Shipped:
    """What a remote call sends back: the value or the error, and what the body recorded.

    :ivar worker: where it ran (a worker's address)
    :ivar trace: the error's traceback as formatted where it was raised (pickling drops it)
    """

    value: Any = None
    error: BaseException | None = None
    lines: list[Line] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    worker: str | None = None
    trace: str | None = None


def portable(args: Mapping[str, Any]) -> dict[str, Any]:
    """*args* with the service-side ``run`` (if any) replaced by its :class:`RunSpec`."""
    out = dict(args)
    run = out.get(RUN)
    if isinstance(run, Run):
        log = run.log
        ident = log.ident if isinstance(log, TaskLogger) else (run.id, run.task, -1, run.attempt)
        out[RUN] = RunSpec(
            run.id,
            run.flow,
            run.task,
            run.index,
            run.logical_date,
            dict(run.params),
            dict(run.trigger),
            run.attempt,
            ident,
        )
    return out


def _open(args: dict[str, Any], shipped: Shipped) -> dict[str, Any]:
    """Where the body runs: a :class:`Run` for the spec in *args*, recording into *shipped*."""
    spec = args.get(RUN)
    if not isinstance(spec, RunSpec):
        return args
    clock = SystemClock()

    def keep(row: tuple[Any, ...]) -> None:
        shipped.lines.append((row[4], row[5], row[6]))

    args[RUN] = Run(
        id=spec.id,
        flow=spec.flow,
        task=spec.task,
        index=spec.index,
        logical_date=spec.logical_date,
        params=spec.params,
        trigger=spec.trigger,
        attempt=spec.attempt,
        log=TaskLogger(keep, spec.ident, spec.task, clock.now),
        on_check=shipped.checks.append,
    )
    return args


def call_here(fn: Callable[..., Any], args: Mapping[str, Any], worker: str | None) -> Shipped:
    """Call a ``def`` body with *args* (from :func:`portable`) here; never raises."""
    shipped = Shipped(worker=worker)
    try:
        shipped.value = fn(**_open(dict(args), shipped))
    except BaseException as exc:  # noqa: BLE001 - the attempt's outcome, shipped back
        _failed(shipped, exc)
    return shipped


async def acall_here(
    fn: Callable[..., Any], args: Mapping[str, Any], worker: str | None
) -> Shipped:
    """Await an ``async def`` body with *args* (from :func:`portable`) here. Raises only the
    cancellation of the call itself."""
    import asyncio

    shipped = Shipped(worker=worker)
    try:
        shipped.value = await fn(**_open(dict(args), shipped))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # noqa: BLE001 - the attempt's outcome, shipped back
        _failed(shipped, exc)
    return shipped


def failure(exc: BaseException, worker: str | None) -> Shipped:
    """An outcome that is *exc*, raised where the body was to run (loading it failed)."""
    shipped = Shipped(worker=worker)
    _failed(shipped, exc)
    return shipped


def _failed(shipped: Shipped, exc: BaseException) -> None:
    shipped.error = exc
    try:
        shipped.trace = "".join(traceback.format_exception(exc)).rstrip()
    except BaseException:  # noqa: BLE001 - a task's odd error must still travel
        shipped.trace = None
    exc.__traceback__ = None  # frames do not pickle, and would keep the body's locals alive


def unpicklable_error(shipped: Shipped, why: BaseException) -> Shipped:
    """*shipped* with its error replaced by a :class:`RemoteError` that pickles (the error
    itself does not: *why*)."""
    error = shipped.error
    assert error is not None
    try:
        message = str(error)
    except BaseException:  # noqa: BLE001
        message = "<str() failed>"
    note = f"(the exception itself could not be sent back: {type(why).__name__}: {why})"
    shipped.error = RemoteError(type(error).__name__, f"{message} {note}", shipped.trace or "")
    return shipped


def deliver(shipped: Shipped, run: object) -> Any:
    """On the service: store the lines and checks in *run* (the attempt's :class:`Run`, when
    the task takes one), then return the value or raise the error (with the remote
    traceback as a note)."""
    if isinstance(run, Run):
        log = run.log
        for stamp, level, message in shipped.lines:
            if isinstance(log, TaskLogger):
                log.replay(stamp, level, message)
            else:
                log.log(logging.getLevelName(level), message)
        for check in shipped.checks:
            run.take_check(check)
    error = shipped.error
    if error is None:
        return shipped.value
    if shipped.trace:
        where = f" on {shipped.worker}" if shipped.worker else ""
        error.add_note(f"remote traceback{where}:\n{shipped.trace}")
    raise error
