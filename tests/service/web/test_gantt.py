"""The Gantt layout as a unit: one bar per started attempt, every bar inside the axis, a
retry's wait as a gap, a running attempt reaching to now, ticks at round steps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from runtime import codec
from runtime.service.web.gantt import (
    MAX_ROWS,
    MIN_BAR,
    PLOT_W,
    layout_gantt,
    offset_text,
)

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return codec.iso(T0 + timedelta(seconds=seconds)) or ""


def attempt(
    name: str, idx: int, n: int, state: str, start: float | None, end: float | None
) -> dict[str, Any]:
    return {
        "name": name,
        "idx": idx,
        "attempt": n,
        "state": state,
        "started_at": at(start) if start is not None else None,
        "ended_at": at(end) if end is not None else None,
        "error_message": "boom" if state == "failed" else None,
    }


ATTEMPTS = [
    attempt("extract", -1, 1, "succeeded", 0, 10),
    attempt("load", 0, 1, "failed", 10, 20),
    attempt("load", 0, 2, "succeeded", 50, 60),
    attempt("report", -1, 1, "running", 60, None),
]
ROWS = [("extract", "succeeded"), ("load", "succeeded"), ("load[0]", "succeeded"),
        ("report", "running")]  # fmt: skip


def test_one_bar_per_attempt_inside_the_axis() -> None:
    chart = layout_gantt(ROWS, ATTEMPTS, now=T0 + timedelta(seconds=100))
    assert [(b.label, b.attempt, b.state) for b in chart.bars] == [
        ("extract", 1, "succeeded"),
        ("load[0]", 1, "failed"),
        ("load[0]", 2, "succeeded"),
        ("report", 1, "running"),
    ]
    for bar in chart.bars:
        assert chart.plot_x <= bar.x
        assert bar.x + bar.w <= chart.plot_x + chart.plot_w + 1e-6
        assert bar.w >= MIN_BAR
    assert [r.label for r in chart.rows] == ["extract", "load", "load[0]", "report"]
    assert chart.span == 100  # the running attempt reaches to now
    running = chart.bars[-1]
    assert running.end is None
    assert running.seconds == 40
    assert round(running.x + running.w) == chart.plot_x + PLOT_W
    scale = PLOT_W / 100
    assert chart.bars[1].x == chart.plot_x + 10 * scale
    assert chart.bars[1].w == 10 * scale


def test_a_retry_leaves_a_gap() -> None:
    chart = layout_gantt(ROWS, ATTEMPTS, now=T0 + timedelta(seconds=100))
    (gap,) = chart.gaps
    first, second = chart.bars[1], chart.bars[2]
    assert (gap.x1, gap.x2) == (first.x + first.w, second.x)
    assert gap.row == first.row == second.row


def test_ticks_are_round_and_on_the_axis() -> None:
    chart = layout_gantt(ROWS, ATTEMPTS, now=T0 + timedelta(seconds=100))
    assert [t.text for t in chart.ticks] == ["0", "15s", "30s", "45s", "1m", "1m15s", "1m30s"]
    assert all(chart.plot_x <= t.x <= chart.plot_x + chart.plot_w for t in chart.ticks)


def test_attempts_that_never_started_and_empty_runs() -> None:
    chart = layout_gantt([("a", "pending")], [attempt("a", -1, 1, "pending", None, None)], T0)
    assert chart.bars == []
    assert chart.start is None
    assert [r.label for r in chart.rows] == ["a"]
    zero = layout_gantt([], [attempt("a", -1, 1, "succeeded", 0, 0)], T0)
    (bar,) = zero.bars  # an instant attempt is still seen
    assert bar.w >= MIN_BAR
    assert bar.x + bar.w <= zero.plot_x + zero.plot_w
    assert [r.label for r in zero.rows] == ["a"]  # a row for an attempt's own label


def test_rows_past_the_cap_are_counted_not_drawn() -> None:
    rows = [(f"m[{i}]", "succeeded") for i in range(MAX_ROWS + 5)]
    attempts = [attempt("m", i, 1, "succeeded", i, i + 1) for i in range(MAX_ROWS + 5)]
    chart = layout_gantt(rows, attempts, T0)
    assert len(chart.rows) == MAX_ROWS
    assert chart.hidden_rows == 5
    assert len(chart.bars) == MAX_ROWS


def test_offset_text() -> None:
    assert [offset_text(s) for s in (0, 0.25, 45, 120, 90, 3600, 93600)] == [
        "0", "250ms", "45s", "2m", "1m30s", "1h", "1d2h",
    ]  # fmt: skip
