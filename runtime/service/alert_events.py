"""What a bus event means as an alert: its event name and the alert dict the notifiers get
(the shape in :class:`runtime.abc.Notifier`). Pure: no I/O, no clock."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from runtime import codec
from runtime.engine.events import (
    CheckFailed,
    Event,
    RunEnded,
    RunStarted,
    TaskEnded,
    TaskEvent,
    TaskRetrying,
)
from runtime.scheduling.sla import SlaMissed
from runtime.states import RunState, TaskState

__all__ = ["ERROR_EXCERPT", "alert_name", "from_event", "make_alert"]

ERROR_EXCERPT = 500
"""Longest error text an alert carries (the whole error is in ``sluiceway show``)."""

_RUN_EVENTS = {
    RunState.SUCCEEDED: "run.succeeded",
    RunState.FAILED: "run.failed",
    RunState.CANCELLED: "run.cancelled",
}


def make_alert(
    event: str,
    summary: str,
    ts: datetime,
    *,
    kind: str = "alert",
    flow: str | None = None,
    run_id: int | None = None,
    task: str | None = None,
    state: str | None = None,
    error: str | None = None,
    details: dict[str, Any] | None = None,
    public_url: str | None = None,
) -> dict[str, Any]:
    """An alert dict with every field of the contract (the outbox adds ``id``, and reads the
    logical date of the run)."""
    if error is not None and len(error) > ERROR_EXCERPT:
        error = error[: ERROR_EXCERPT - 3] + "..."
    url = None
    if public_url and run_id is not None:
        url = f"{public_url.rstrip('/')}/runs/{run_id}"
    return {
        "kind": kind,
        "event": event,
        "summary": summary,
        "flow": flow,
        "run_id": run_id,
        "task": task,
        "state": state,
        "error": error,
        "logical_date": None,
        "ts": codec.iso(ts),
        "url": url,
        "details": details or {},
        "items": [],
        "resolves": [],
    }


_KINDS: dict[type[Event], str] = {
    RunStarted: "run.started",
    TaskRetrying: "task.retrying",
    CheckFailed: "quality.failed",
    SlaMissed: "sla.missed",
}


def alert_name(event: Event) -> str | None:
    """The event name of the alert :func:`from_event` makes of *event*, or ``None`` when it
    makes none; cheap (no allocation): the engine publishes an event per task state change,
    and most of them (a task started, a task that succeeded at its first try) are none."""
    if isinstance(event, TaskEnded):
        if event.index is not None:
            return None
        if event.state is TaskState.FAILED:
            return "task.failed"
        if event.state is TaskState.SUCCEEDED and event.attempts > 1:
            return "task.recovered"
        return None
    if isinstance(event, RunEnded):
        return _RUN_EVENTS.get(event.state)
    name = _KINDS.get(type(event))
    if name is None or (isinstance(event, TaskEvent) and event.index is not None):
        return None
    return name


def from_event(event: Event, public_url: str | None = None) -> dict[str, Any] | None:
    """The alert of bus *event*, or ``None`` when it is none (a task started, a task that
    succeeded at its first attempt, a skipped or upstream_failed task, an event of one
    instance of a mapped task)."""
    if isinstance(event, TaskEvent) and event.index is not None:
        return None  # a mapped instance: its task's own end says it (no storm of instances)
    base: dict[str, Any] = {"flow": event.flow, "run_id": event.run_id, "public_url": public_url}
    what = f"{event.flow} run {event.run_id}"
    if isinstance(event, TaskEnded):
        return _task_ended(event, what, base)
    if isinstance(event, RunEnded):
        name = _RUN_EVENTS.get(event.state)
        if name is None:
            return None
        summary = f"{what} {event.state}" + (f": {event.error}" if event.error else "")
        return make_alert(
            name, summary, event.ts, state=str(event.state), error=event.error, **base
        )
    if isinstance(event, RunStarted):
        return make_alert("run.started", f"{what} started", event.ts, state="running", **base)
    if isinstance(event, TaskRetrying):
        summary = f"{what}: task {event.task} attempt {event.attempt} failed; retrying"
        details = {"attempt": event.attempt, "delay": event.delay}
        return make_alert(
            "task.retrying",
            f"{summary} in {event.delay:g}s",
            event.ts,
            task=event.task,
            state="retrying",
            error=event.error,
            details=details,
            **base,
        )
    if isinstance(event, CheckFailed):
        return _check_failed(event, what, base)
    if isinstance(event, SlaMissed):
        scope = f"task {event.task}" if event.task else "run"
        facts: dict[str, Any] = {
            "sla": event.sla,
            "deadline": codec.iso(event.deadline),
            "scope": event.scope,
        }
        summary = f"{what}: {scope} missed its SLA of {event.sla:g}s"
        return make_alert("sla.missed", summary, event.ts, task=event.task, details=facts, **base)
    return None


def _task_ended(event: TaskEnded, what: str, base: dict[str, Any]) -> dict[str, Any] | None:
    if event.state is TaskState.FAILED:
        summary = f"{what}: task {event.task} failed after {event.attempts} attempt(s)"
        name = "task.failed"
    elif event.state is TaskState.SUCCEEDED and event.attempts > 1:
        summary = f"{what}: task {event.task} succeeded at attempt {event.attempts}"
        name = "task.recovered"
    else:
        return None
    return make_alert(
        name,
        summary,
        event.ts,
        task=event.task,
        state=str(event.state),
        error=event.error if name == "task.failed" else None,
        details={"attempts": event.attempts, "duration": event.duration},
        **base,
    )


def _check_failed(event: CheckFailed, what: str, base: dict[str, Any]) -> dict[str, Any]:
    detail = f": {event.detail}" if event.detail else ""
    details = {"check": event.check, "severity": event.severity, "attempt": event.attempt}
    return make_alert(
        "quality.failed",
        f"{what}: check {event.check} of task {event.task} failed ({event.severity}){detail}",
        event.ts,
        task=event.task,
        state="failed",
        error=event.detail,
        details=details,
        **base,
    )
