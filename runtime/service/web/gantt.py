"""A run's attempts as a Gantt timeline, purely: one row per task (or mapped instance), one
bar per attempt on a shared time axis, the wait between a failed attempt and its retry as a
gap, a running attempt reaching to now, and axis ticks at round steps.

The run page's template draws it (autoescaped); this only decides where things go.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from runtime import codec

LABEL_W = 180  # px: the rows' labels
PLOT_W = 860  # px: the time axis
ROW_H = 22
BAR_H = 14
AXIS_H = 26  # the ticks' labels above the rows
MIN_BAR = 2  # px: an attempt of a few milliseconds is still seen
MAX_ROWS = 300  # a mapped task of 10,000 instances shows its first rows and a count

# tick steps in seconds: the first that gives at most 8 ticks is used
STEPS = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800,
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bar:
    """One attempt: its row, its place on the axis, and what it was."""

    label: str
    row: int
    attempt: int
    state: str
    x: float
    y: float
    w: float
    start: str
    end: str | None  # None: still running (drawn up to now)
    seconds: float
    error: str | None


@dataclass(frozen=True, slots=True)
class Gap:
    """The wait between two attempts of one row (a retry's delay)."""

    row: int
    x1: float
    x2: float
    y: float


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    text: str


@dataclass(frozen=True, slots=True)
class Row:
    label: str
    y: float
    state: str


@dataclass(frozen=True, slots=True)
class GanttChart:
    rows: list[Row]
    bars: list[Bar]
    gaps: list[Gap]
    ticks: list[Tick]
    width: float
    height: float
    plot_x: float
    plot_w: float
    start: str | None
    span: float  # seconds the axis covers
    hidden_rows: int  # rows left out past MAX_ROWS
    row_h: float = ROW_H
    bar_h: float = BAR_H
    axis_h: float = AXIS_H


def offset_text(seconds: float) -> str:
    """A tick's label: ``0``, ``250ms``, ``45s``, ``2m``, ``1m30s``, ``3h``, ``1d2h``."""
    if seconds == 0:
        return "0"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    whole = round(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if whole >= size:
            out += f"{whole // size}{unit}"
            whole %= size
    return out


def _step(span: float) -> float:
    for step in STEPS:
        if span / step <= 8:
            return step
    return STEPS[-1] * max(1, round(span / STEPS[-1] / 8))


def label_of(name: str, idx: int) -> str:
    """``load`` for a task's own row (idx -1), ``load[3]`` for an instance."""
    return name if idx < 0 else f"{name}[{idx}]"


Span = tuple[Mapping[str, Any], datetime, datetime]


def _spans(attempts: Sequence[Mapping[str, Any]], now: datetime) -> list[Span]:
    spans = []
    for att in attempts:
        start = codec.parse_iso(att["started_at"])
        if start is not None:
            spans.append((att, start, codec.parse_iso(att["ended_at"]) or now))
    return spans


def _bar(att: Mapping[str, Any], row: int, start: datetime, end: datetime, x: float,
         w: float) -> Bar:  # fmt: skip
    return Bar(
        label_of(att["name"], att["idx"]),
        row,
        att["attempt"],
        att["state"],
        round(x, 2),
        AXIS_H + row * ROW_H + (ROW_H - BAR_H) / 2,
        round(w, 2),
        att["started_at"],
        att["ended_at"],
        round((end - start).total_seconds(), 3),
        att.get("error_message"),
    )


def layout_gantt(
    rows: Sequence[tuple[str, str]], attempts: Sequence[Mapping[str, Any]], now: datetime
) -> GanttChart:
    """The chart of *attempts* (``get_attempts`` rows: name, idx, attempt, state,
    started_at, ended_at, error_message) over *rows* ((label, state) in display order;
    attempts of other labels get rows of their own at the end). Running attempts end at
    *now*. Attempts that never started are not drawn."""
    spans = _spans(attempts, now)
    order = [label for label, _ in rows]
    states = dict(rows)
    for att, _, _ in spans:
        label = label_of(att["name"], att["idx"])
        if label not in states:
            states[label] = att["state"]
            order.append(label)
    shown = order[:MAX_ROWS]
    row_of = {label: i for i, label in enumerate(shown)}
    t0 = min((s for _, s, _ in spans), default=now)
    t1 = max((e for _, _, e in spans), default=now)
    span = max((t1 - t0).total_seconds(), 0.001)
    scale = PLOT_W / span
    right = LABEL_W + PLOT_W
    bars: list[Bar] = []
    for att, start, end in spans:
        row = row_of.get(label_of(att["name"], att["idx"]))
        if row is not None:
            x = min(LABEL_W + (start - t0).total_seconds() * scale, right - MIN_BAR)
            w = min(max(LABEL_W + (end - t0).total_seconds() * scale - x, MIN_BAR), right - x)
            bars.append(_bar(att, row, start, end, x, w))
    step = _step(span)
    return GanttChart(
        rows=[Row(label, AXIS_H + i * ROW_H, states[label]) for i, label in enumerate(shown)],
        bars=bars,
        gaps=_gaps(bars),
        ticks=[
            Tick(round(LABEL_W + k * step * scale, 2), offset_text(k * step))
            for k in range(int(span / step) + 1)
        ],
        width=right + 28,  # room for the last tick's label
        height=AXIS_H + len(shown) * ROW_H + 4,
        plot_x=LABEL_W,
        plot_w=PLOT_W,
        start=codec.iso(t0) if spans else None,
        span=span,
        hidden_rows=len(order) - len(shown),
    )


def _gaps(bars: Sequence[Bar]) -> list[Gap]:
    by_row: dict[int, list[Bar]] = {}
    for bar in bars:
        by_row.setdefault(bar.row, []).append(bar)
    gaps = []
    for row, items in by_row.items():
        items.sort(key=lambda b: b.attempt)
        for before, after in itertools.pairwise(items):
            if after.x > before.x + before.w:
                gaps.append(Gap(row, before.x + before.w, after.x, before.y + BAR_H / 2))
    return gaps
