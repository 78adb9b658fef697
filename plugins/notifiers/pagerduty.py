"""The PagerDuty notifier: Events API v2 ``trigger`` events that join one incident per
(flow, event kind), and ``resolve`` events for them when the flow recovers."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from plugins.notifiers import facts as f
from plugins.notifiers import options as opt
from plugins.notifiers.http import HttpNotifier

__all__ = ["EVENTS_URL", "PagerDutyNotifier", "dedup_key", "events"]

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_MAX = 1024  # PagerDuty truncates a longer summary
SEVERITIES = ("critical", "error", "warning", "info")


def dedup_key(flow: str | None, event: str | None) -> str:
    """``sluiceway/<flow>/<event>`` (``sluiceway/<event>`` without a flow): every repeat of one
    kind of trouble in one flow joins one incident, and a recovery resolves it by the same
    key."""
    what = event or "alert"
    return f"sluiceway/{flow}/{what}" if flow else f"sluiceway/{what}"


def _trigger(alert: Mapping[str, Any], source: str, severity: str | None) -> dict[str, Any]:
    event = alert.get("event")
    if not event and f.items(alert):
        event = f.items(alert)[0].get("event")
    details = {k: v for k, v in f.facts(alert).items() if v not in (None, [])}
    payload: dict[str, Any] = {
        "summary": f.title(alert)[:SUMMARY_MAX],
        "source": source,
        "severity": severity or f.severity(alert),
        "custom_details": details,
    }
    if alert.get("ts"):
        payload["timestamp"] = alert["ts"]
    if alert.get("flow"):
        payload["component"] = alert["flow"]
    if event:
        payload["class"] = event
    out: dict[str, Any] = {
        "event_action": "trigger",
        "dedup_key": dedup_key(alert.get("flow"), event),
        "payload": payload,
        "client": "Sluiceway",
    }
    if alert.get("url"):
        out["client_url"] = alert["url"]
        out["links"] = [{"href": alert["url"], "text": _link_text(alert)}]
    if alert.get("kind") == "test":
        out["dedup_key"] = "sluiceway/test"
    return out


def _link_text(alert: Mapping[str, Any]) -> str:
    if alert.get("run_id") is not None:
        return f"{alert.get('flow') or 'run'} run {alert['run_id']} in Sluiceway"
    return "Open in Sluiceway"


def events(
    alert: Mapping[str, Any], *, source: str, severity: str | None = None
) -> list[dict[str, Any]]:
    """The Events API v2 events *alert* becomes, without the routing key: one ``trigger``, or
    for a recovery one ``resolve`` per event in ``alert["resolves"]``."""
    if alert.get("kind") != "recovery":
        return [_trigger(alert, source, severity)]
    return [
        {"event_action": "resolve", "dedup_key": dedup_key(alert.get("flow"), str(event))}
        for event in alert.get("resolves") or []
    ]


class PagerDutyNotifier(HttpNotifier):
    """Sends alerts to a PagerDuty service through the Events API v2 (answers ``202``).

    A failure, a missed SLA or a failed check is a ``trigger`` with ``dedup_key``
    ``sluiceway/<flow>/<event>``, so repeats join one open incident; the severity is
    ``error`` for failures (run, task, SLA, ``error`` checks, trigger errors), ``warning``
    for retries and ``warn`` checks, ``info`` otherwise. A recovery alert sends ``resolve``
    for each event it resolves. The run's link goes in ``links`` when the API has a public URL.

    Options: ``routing_key`` (the integration key; secret; required), ``url`` (default
    :data:`EVENTS_URL`), ``source`` (default this machine's host name), ``severity`` (one of
    ``critical``, ``error``, ``warning``, ``info``: used for every trigger instead of the
    mapping), and those of :class:`~plugins.notifiers.http.HttpNotifier`.
    """

    plugin = "pagerduty"
    KNOWN: ClassVar[frozenset[str]] = HttpNotifier.KNOWN | {"routing_key", "source", "severity"}
    DEFAULT_URL = EVENTS_URL

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Those of every HTTP notifier, ``routing_key``, ``source`` and ``severity``."""
        return [
            *super().check_options(options),
            *opt.string(options, "routing_key", required=True, secret=True),
            *opt.string(options, "source"),
            *opt.choice(options, "severity", SEVERITIES),
        ]

    async def send(self, alert: Mapping[str, Any]) -> str:
        """Send *alert*'s events in order; returns e.g. ``"202 Accepted"`` (one per event).

        :raises DeliveryError: see :func:`plugins.notifiers.http.post`; a recovery that
            failed halfway is sent whole again (a second ``resolve`` changes nothing)
        """
        source = str(self.options.get("source") or socket.gethostname())
        answers = []
        for event in events(alert, source=source, severity=self.options.get("severity")):
            body = orjson.dumps({"routing_key": str(self.options["routing_key"]), **event})
            answer = await self.post(body, {})
            answers.append(f"{answer.status} {answer.reason}")
        return "; ".join(answers) or "nothing to resolve"
