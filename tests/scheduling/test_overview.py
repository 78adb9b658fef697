"""Flows as people read them: triggers in words, the next instants, the settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from runtime import Flow, cron, every, files, on_event, on_flow
from runtime.scheduling.overview import cron_words, flow_overview, trigger_words

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday


@pytest.mark.parametrize(
    ("expr", "words"),
    [
        ("0 2 * * *", "At 02:00"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("30 6 * * 1-5", "At 06:30, Monday through Friday"),
        ("@daily", "At 00:00"),
        ("@hourly", "Every hour"),
    ],
)
def test_cron_in_words(expr: str, words: str) -> None:
    assert cron_words(expr) == words


def test_every_kind_of_trigger_in_words() -> None:
    assert trigger_words(cron("0 2 * * *", tz="Europe/Paris")) == "At 02:00 (Europe/Paris)"
    assert trigger_words(every("15m")) == "Every 15 minutes"
    assert trigger_words(every("1h")) == "Every hour"
    assert trigger_words(every("90s")) == "Every 90 seconds"
    assert trigger_words(on_event("landed")) == "When the event 'landed' is sent"
    assert trigger_words(on_flow("orders")) == "After a run of orders ends succeeded"
    assert trigger_words(on_flow("orders", state=["failed", "cancelled"], task="load")) == (
        "After a run of task 'load' of flow 'orders' ends failed or cancelled"
    )
    spec = files("/data/inbox", pattern="*.csv")
    assert trigger_words(spec) == "When a file matching *.csv lands in /data/inbox"


def test_flow_overview_has_the_schedule_and_the_next_runs() -> None:
    flow = Flow(
        "orders",
        triggers=[cron("0 2 * * *"), every("6h")],
        params={"region": "eu"},
        sla="45m",
        description="Daily orders",
    )

    @flow.task()
    def extract() -> None: ...

    info = flow_overview(flow, NOW)
    assert info["name"] == "orders"
    assert info["tasks"] == ["extract"]
    assert info["params"] == {"region": "eu"}
    assert info["schedule"] == "At 02:00; Every 6 hours"
    assert info["next_runs"] == [
        "2026-03-02T12:00:00Z",
        "2026-03-02T18:00:00Z",
        "2026-03-03T00:00:00Z",
    ]
    assert info["triggers"][0] == {
        "kind": "cron",
        "expr": "0 2 * * *",
        "tz": "UTC",
        "text": "cron('0 2 * * *')",
        "words": "At 02:00",
    }
    assert info["sla"] == 2700.0


def test_a_flow_without_time_triggers_has_no_next_runs() -> None:
    flow = Flow("manual")

    @flow.task()
    def only() -> None: ...

    assert flow_overview(flow, NOW)["next_runs"] == []
    assert flow_overview(flow, NOW)["schedule"] == ""
