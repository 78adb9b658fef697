"""The PagerDuty notifier against a real local server standing in for the Events API v2:
triggers joined by dedup key, severities, links, and resolves for a recovery."""

from __future__ import annotations

from typing import Any

import pytest

from plugins.notifiers.facts import severity
from plugins.notifiers.pagerduty import EVENTS_URL, PagerDutyNotifier, dedup_key
from runtime.abc import DeliveryError
from tests.plugins.notifiers.conftest import Endpoint, Reply, alert

KEY = "R0UT1NGKEY0123456789abcdefABCDEF"


def pagerduty(endpoint: Endpoint, **options: Any) -> PagerDutyNotifier:
    return PagerDutyNotifier(
        "oncall", {"url": endpoint.url("/v2/enqueue"), "routing_key": KEY, **options}
    )


async def test_a_failure_is_a_trigger(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(202, '{"status":"success","dedup_key":"sluiceway/orders/run.failed"}'))
    assert await pagerduty(endpoint, source="etl-box").send(alert()) == "202 Accepted"
    body = endpoint.received[0].json()
    assert body["routing_key"] == KEY
    assert body["event_action"] == "trigger"
    assert body["dedup_key"] == "sluiceway/orders/run.failed"
    payload = body["payload"]
    assert payload["summary"] == "orders run 12 failed: failed tasks: load"
    assert (payload["source"], payload["severity"]) == ("etl-box", "error")
    assert (payload["component"], payload["class"]) == ("orders", "run.failed")
    assert payload["timestamp"] == "2026-01-02T00:05:00Z"
    assert payload["custom_details"]["run_id"] == 12
    assert payload["custom_details"]["error"].startswith("ConnectionError")
    assert body["links"] == [
        {"href": "https://sluiceway.example/runs/12", "text": "orders run 12 in Sluiceway"}
    ]
    assert body["client"] == "Sluiceway"


async def test_repeats_of_one_kind_of_trouble_share_a_dedup_key(endpoint: Endpoint) -> None:
    notifier = pagerduty(endpoint)
    await notifier.send(alert(id="a1", run_id=12))
    await notifier.send(alert(id="a2", run_id=13))
    await notifier.send(alert(id="a3", event="sla.missed"))
    await notifier.send(alert(id="a4", flow="billing"))
    keys = [r.json()["dedup_key"] for r in endpoint.received]
    assert keys == [
        "sluiceway/orders/run.failed",
        "sluiceway/orders/run.failed",
        "sluiceway/orders/sla.missed",
        "sluiceway/billing/run.failed",
    ]


async def test_a_recovery_resolves_each_event(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(202, '{"status":"success"}'))
    recovery = alert(kind="recovery", event="run.succeeded", resolves=["run.failed", "sla.missed"])
    assert await pagerduty(endpoint).send(recovery) == "202 Accepted; 202 Accepted"
    bodies = [r.json() for r in endpoint.received]
    assert bodies == [
        {"routing_key": KEY, "event_action": "resolve", "dedup_key": "sluiceway/orders/run.failed"},
        {"routing_key": KEY, "event_action": "resolve", "dedup_key": "sluiceway/orders/sla.missed"},
    ]


async def test_a_failed_resolve_is_a_delivery_error(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(202, ""), Reply(500, ""))
    recovery = alert(kind="recovery", resolves=["run.failed", "sla.missed"])
    with pytest.raises(DeliveryError, match="answered 500"):
        await pagerduty(endpoint).send(recovery)


async def test_a_bad_event_is_permanent(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(400, '{"status":"invalid event"}'))
    with pytest.raises(DeliveryError) as info:
        await pagerduty(endpoint).send(alert())
    assert info.value.permanent
    assert "invalid event" in str(info.value)


async def test_a_digest_is_one_trigger_listing_its_items(endpoint: Endpoint) -> None:
    items = [alert(id=f"s-{n}", run_id=n) for n in range(4)]
    await pagerduty(endpoint).send(alert(kind="digest", event="run.failed", items=items))
    (request,) = endpoint.received
    body = request.json()
    assert body["dedup_key"] == "sluiceway/orders/run.failed"
    assert body["payload"]["severity"] == "error"
    assert len(body["payload"]["custom_details"]["items"]) == 4


async def test_the_severity_option_overrides_the_mapping(endpoint: Endpoint) -> None:
    await pagerduty(endpoint, severity="critical").send(alert())
    assert endpoint.received[0].json()["payload"]["severity"] == "critical"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"event": "run.failed"}, "error"),
        ({"event": "task.failed"}, "error"),
        ({"event": "sla.missed"}, "error"),
        ({"event": "trigger.error"}, "error"),
        ({"event": "quality.failed", "details": {"severity": "error"}}, "error"),
        ({"event": "quality.failed", "details": {"severity": "warn"}}, "warning"),
        ({"event": "task.retrying"}, "warning"),
        ({"event": "run.succeeded"}, "info"),
        ({"event": "service.started"}, "info"),
        ({"kind": "test", "event": None}, "info"),
        ({"kind": "recovery", "event": "run.succeeded"}, "info"),
        ({"kind": "digest", "event": None, "items": [{"event": "task.retrying"}]}, "warning"),
    ],
)
def test_severity(fields: dict[str, Any], expected: str) -> None:
    assert severity(alert(**fields)) == expected


def test_dedup_key_without_a_flow() -> None:
    assert dedup_key(None, "service.stopping") == "sluiceway/service.stopping"
    assert dedup_key("orders", None) == "sluiceway/orders/alert"


def test_options() -> None:
    notifier = PagerDutyNotifier("oncall", {"routing_key": KEY})
    assert notifier.url == EVENTS_URL
    assert notifier.secrets() == [KEY]
    assert PagerDutyNotifier.check_options({}) == ["option 'routing_key' is required"]
    assert PagerDutyNotifier.check_options({"routing_key": KEY, "severity": "high"}) == [
        "option 'severity' must be one of 'critical', 'error', 'warning', 'info', not 'high'"
    ]
    assert PagerDutyNotifier.check_options({"routing_key": 5}) == [
        "option 'routing_key' must be a string, not int"
    ]


async def test_a_digest_of_several_kinds_joins_each_kinds_incident(endpoint: Endpoint) -> None:
    items = [alert(id="s-1", event="task.failed"), alert(id="s-2"), alert(id="s-3")]
    digest = alert(
        kind="digest",
        summary="orders: 3 alerts grouped",
        items=items,
        details={"count": 3, "events": {"task.failed": 1, "run.failed": 2}},
    )
    await pagerduty(endpoint).send(digest)
    bodies = [r.json() for r in endpoint.received]
    assert [b["dedup_key"] for b in bodies] == [
        "sluiceway/orders/task.failed",
        "sluiceway/orders/run.failed",
    ]
    assert bodies[1]["payload"]["summary"] == "orders: 2 x run.failed (orders: 3 alerts grouped)"
    assert [len(b["payload"]["custom_details"]["items"]) for b in bodies] == [1, 2]


async def test_a_recovery_with_nothing_to_resolve_sends_nothing(endpoint: Endpoint) -> None:
    answer = await pagerduty(endpoint).send(alert(kind="recovery", resolves=[]))
    assert answer == "nothing to resolve"
    assert endpoint.received == []
