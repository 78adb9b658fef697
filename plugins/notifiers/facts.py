"""What an alert says, read the same way by every notifier: its facts as JSON, a title, the
labelled lines people read, its severity, and a digest's items."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELDS = (
    "id",
    "kind",
    "event",
    "summary",
    "flow",
    "run_id",
    "task",
    "state",
    "error",
    "logical_date",
    "ts",
    "url",
    "details",
    "items",
    "resolves",
)
"""The alert's fields (runtime.abc.Notifier), in the order a webhook body lists them."""

ERROR_EVENTS = frozenset({"run.failed", "task.failed", "sla.missed", "trigger.error"})
WARNING_EVENTS = frozenset({"task.retrying"})
SEVERITY_RANK = {"info": 0, "warning": 1, "error": 2, "critical": 3}

ERROR_EXCERPT = 1500
"""Characters of an error shown in a message (the alert's excerpt may be longer)."""


def facts(alert: Mapping[str, Any]) -> dict[str, Any]:
    """Every field of *alert* in :data:`FIELDS` order, a missing one as ``None`` (``[]`` for
    ``items`` and ``resolves``); a digest's items are reduced to their facts too."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = alert.get(name)
        if name in ("items", "resolves"):
            value = list(value or [])
        out[name] = value
    out["items"] = [facts(item) if isinstance(item, Mapping) else item for item in out["items"]]
    return out


def severity(alert: Mapping[str, Any]) -> str:
    """``"error"``, ``"warning"`` or ``"info"``: failures, missed SLAs, failed ``error``
    checks and trigger errors are errors; retries and ``warn`` checks are warnings; the rest
    (starts, successes, recoveries, tests) is information. A digest is as severe as its most
    severe item."""
    if alert.get("kind") == "recovery":
        return "info"
    found = _own_severity(alert)
    for item in alert.get("items") or []:
        if isinstance(item, Mapping):
            other = _own_severity(item)
            if SEVERITY_RANK[other] > SEVERITY_RANK[found]:
                found = other
    return found


def _own_severity(alert: Mapping[str, Any]) -> str:
    event = alert.get("event")
    if event == "quality.failed":
        details = alert.get("details") or {}
        level = details.get("severity") if isinstance(details, Mapping) else None
        return "warning" if level in ("warn", "warning") else "error"
    if event in ERROR_EVENTS:
        return "error"
    return "warning" if event in WARNING_EVENTS else "info"


def title(alert: Mapping[str, Any]) -> str:
    """One line for people: the alert's summary, or what it is about when it has none."""
    summary = alert.get("summary")
    if summary:
        return one_line(str(summary))
    what = " ".join(str(p) for p in (alert.get("flow"), alert.get("event")) if p)
    return what or f"sluiceway {alert.get('kind') or 'alert'}"


def lines(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The labelled facts people read (flow, run, task, state, event, dates), those present."""
    labelled = [
        ("Flow", alert.get("flow")),
        ("Run", alert.get("run_id")),
        ("Task", alert.get("task")),
        ("State", alert.get("state")),
        ("Event", alert.get("event")),
        ("Logical date", alert.get("logical_date")),
        ("At", alert.get("ts")),
    ]
    details = alert.get("details")
    if isinstance(details, Mapping):
        labelled += [(str(k).replace("_", " ").capitalize(), v) for k, v in details.items()]
    return [(label, one_line(str(value))) for label, value in labelled if value not in (None, "")]


def items(alert: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A digest's grouped alerts (``[]`` for any other kind)."""
    return [item for item in alert.get("items") or [] if isinstance(item, Mapping)]


def item_line(item: Mapping[str, Any]) -> str:
    """One line for one alert of a digest: when, and what."""
    when = item.get("ts")
    return f"{when}: {title(item)}" if when else title(item)


def excerpt(text: str | None, limit: int = ERROR_EXCERPT) -> str | None:
    """*text* cut to *limit* characters (marked with an ellipsis), or ``None``."""
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(text: str, limit: int = 300) -> str:
    """*text* on one line, cut to *limit* characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
