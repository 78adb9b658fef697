"""Which bus events are alerts, and the alert dict each becomes (the notifier contract)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runtime.engine.events import (
    CheckFailed,
    Event,
    RunEnded,
    RunStarted,
    TaskEnded,
    TaskRetrying,
    TaskStarted,
)
from runtime.scheduling.sla import SlaMissed
from runtime.service.alert_events import ERROR_EXCERPT, alert_name, from_event, make_alert
from runtime.states import RunState, TaskState

TS = datetime(2026, 1, 2, 0, 5, tzinfo=UTC)
FIELDS = {
    "kind", "event", "summary", "flow", "run_id", "task", "state", "error", "logical_date",
    "ts", "url", "details", "items", "resolves",
}  # fmt: skip


def ended(state: TaskState, attempts: int, index: int | None = None) -> TaskEnded:
    label = "load" if index is None else f"load[{index}]"
    return TaskEnded(TS, 12, "orders", label, "load", index, state, attempts, 1.5, "boom")


@pytest.mark.parametrize(
    ("event", "name", "task", "state"),
    [
        (RunStarted(TS, 12, "orders"), "run.started", None, "running"),
        (RunEnded(TS, 12, "orders", RunState.SUCCEEDED), "run.succeeded", None, "succeeded"),
        (RunEnded(TS, 12, "orders", RunState.FAILED, "x"), "run.failed", None, "failed"),
        (RunEnded(TS, 12, "orders", RunState.CANCELLED), "run.cancelled", None, "cancelled"),
        (ended(TaskState.FAILED, 3), "task.failed", "load", "failed"),
        (ended(TaskState.SUCCEEDED, 2), "task.recovered", "load", "succeeded"),
        (
            TaskRetrying(TS, 12, "orders", "load", "load", None, 1, 2.0, "boom"),
            "task.retrying",
            "load",
            "retrying",
        ),
        (
            CheckFailed(TS, 12, "orders", "load", "load", None, 1, "row_count", "0 rows", "warn"),
            "quality.failed",
            "load",
            "failed",
        ),
        (SlaMissed(TS, 12, "orders", None, "flow", 60.0, TS), "sla.missed", None, None),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_events_that_alert(event: Event, name: str, task: str | None, state: str | None) -> None:
    alert = from_event(event, "https://sw.example/")
    assert alert is not None
    assert set(alert) == FIELDS
    assert (alert["event"], alert["task"], alert["state"]) == (name, task, state)
    assert alert["flow"] == "orders"
    assert alert["run_id"] == 12
    assert alert["ts"] == "2026-01-02T00:05:00Z"
    assert alert["url"] == "https://sw.example/runs/12"
    assert alert["kind"] == "alert"
    assert "orders run 12" in alert["summary"]
    assert alert_name(event) == name  # the hub's cheap look before building the alert


@pytest.mark.parametrize(
    "event",
    [
        TaskStarted(TS, 12, "orders", "load", "load", None, 1),
        ended(TaskState.SUCCEEDED, 1),
        ended(TaskState.SKIPPED, 0),
        ended(TaskState.UPSTREAM_FAILED, 0),
        ended(TaskState.FAILED, 3, index=4),
        TaskRetrying(TS, 12, "orders", "load[1]", "load", 1, 1, 2.0, "boom"),
    ],
    ids=["started", "first-try", "skipped", "upstream-failed", "instance", "instance-retry"],
)
def test_events_that_do_not_alert(event: Event) -> None:
    assert from_event(event) is None
    assert alert_name(event) is None


def test_details_and_the_error_excerpt() -> None:
    sla = from_event(SlaMissed(TS, 12, "orders", "load", "task", 60.0, TS))
    assert sla is not None
    assert sla["details"] == {"sla": 60.0, "deadline": "2026-01-02T00:05:00Z", "scope": "task"}
    check = from_event(
        CheckFailed(TS, 12, "orders", "load", "load", None, 2, "row_count", "0 rows", "error")
    )
    assert check is not None
    assert check["details"] == {"check": "row_count", "severity": "error", "attempt": 2}
    alert: dict[str, Any] = make_alert("run.failed", "s", TS, error="x" * 10_000)
    assert len(alert["error"]) == ERROR_EXCERPT
    assert alert["url"] is None  # no public URL, no link
    assert alert["items"] == []
    assert alert["resolves"] == []
