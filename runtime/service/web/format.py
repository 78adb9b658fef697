"""How the pages write times, durations and values: the jinja2 filters of the dashboard."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from runtime import codec

STATES = (
    "queued",
    "pending",
    "running",
    "retrying",
    "succeeded",
    "failed",
    "upstream_failed",
    "skipped",
    "cancelled",
)
"""Every state the pages colour (``st-<state>``), in the legend's order."""


def duration(seconds: float | None) -> str:
    """``-``, ``0.25s``, ``4.2s``, ``3m 05s``, ``2h 03m``, ``3d 4h``."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s" if whole >= 60 else f"{whole}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def when(stamp: str | None) -> str:
    """An ISO UTC instant as ``2026-01-05 14:03:07Z`` (to the second), ``-`` for none."""
    moment = codec.parse_iso(stamp)
    if moment is None:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def between(start: str | None, end: str | None) -> float | None:
    """Seconds from *start* to *end* (ISO), None when either is missing."""
    first, last = codec.parse_iso(start), codec.parse_iso(end)
    return None if first is None or last is None else (last - first).total_seconds()


def pretty(value: Any) -> str:
    """A value as readable JSON (indented; tagged values as the codec writes them)."""
    return codec.readable(value) if not isinstance(value, dict | list) else _indent(value)


def _indent(value: Any) -> str:
    import orjson

    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return codec.readable(value)


def task_label(name: str, index: int | None = None) -> str:
    """``load`` or ``load[3]``."""
    return name if index is None or index < 0 else f"{name}[{index}]"


def segment(text: str) -> str:
    """*text* quoted as one URL path segment (a flow name with ``/`` or ``?`` stays one)."""
    return quote(text, safe="")


FILTERS = {"duration": duration, "when": when, "pretty": pretty, "segment": segment}
GLOBALS = {"between": between, "task_label": task_label, "STATES": STATES}
