"""Our notifiers are found through their entry points like any third party's; a third-party
notifier (the README's example) is found by name, registered in code or as an entry point."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from plugins.notifiers.email import EmailNotifier, build_message
from plugins.notifiers.pagerduty import PagerDutyNotifier
from plugins.notifiers.slack import SlackNotifier
from plugins.notifiers.webhook import WebhookNotifier
from runtime import registry
from runtime.abc import DeliveryError, Notifier
from tests.plugins.notifiers.conftest import Endpoint, Reply, alert
from tests.plugins.notifiers.teams import TeamsNotifier

OURS: dict[str, type[Notifier]] = {
    "webhook": WebhookNotifier,
    "slack": SlackNotifier,
    "pagerduty": PagerDutyNotifier,
    "email": EmailNotifier,
}


@pytest.mark.parametrize("name", OURS)
def test_our_notifiers_are_entry_points(name: str) -> None:
    cls = OURS[name]
    assert registry._entry_points()[name].value == f"{cls.__module__}:{cls.__name__}"
    assert registry.notifier(name) is cls
    assert name in registry.names("notifier")


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> dict[str, EntryPoint]:
    """The group's entry points, replaced by what the test puts in."""
    eps: dict[str, EntryPoint] = {}
    monkeypatch.setattr(registry, "_eps_cache", eps)
    monkeypatch.setattr(registry, "_loaded", {})
    monkeypatch.setattr(registry, "_registered", {})
    return eps


def test_a_third_party_notifier_registered_in_code(entry_points: dict[str, EntryPoint]) -> None:
    registry.register(TeamsNotifier)
    assert registry.notifier("teams") is TeamsNotifier
    registry.unregister("teams")
    with pytest.raises(registry.PluginError, match="unknown plugin 'teams'"):
        registry.notifier("teams")


async def test_a_third_party_notifier_found_by_its_entry_point(
    entry_points: dict[str, EntryPoint], endpoint: Endpoint
) -> None:
    entry_points["teams"] = EntryPoint(
        name="teams", value="tests.plugins.notifiers.teams:TeamsNotifier", group=registry.GROUP
    )
    cls = registry.notifier("teams")
    assert cls is TeamsNotifier
    assert registry.names("notifier") == ["teams"]
    assert cls.check_options({"url": "ftp://x", "colour": "red"}) == [
        "unknown option 'colour'",
        "option 'url' is required: the webhook's http(s) URL",
    ]
    notifier = cls("ops-channel", {"url": endpoint.url("/webhookb2/abcdef")})
    assert await notifier.send(alert()) == "200 OK"
    assert endpoint.received[0].json() == {"text": "orders run 12 failed: failed tasks: load"}
    endpoint.answer(Reply(404, ""))
    with pytest.raises(DeliveryError, match=r"^127\.0\.0\.1 answered 404 Not Found$") as info:
        await notifier.send(alert())
    assert info.value.permanent


MINIMAL = {"id": "test-1", "kind": "test", "summary": "a test from sluiceway test-alert"}


@pytest.mark.parametrize("name", ["webhook", "slack", "pagerduty"])
async def test_a_bare_test_alert_goes_through_every_http_notifier(
    endpoint: Endpoint, name: str
) -> None:
    options = {"url": endpoint.url()} | ({"routing_key": "k" * 32} if name == "pagerduty" else {})
    notifier = registry.notifier(name)(name, options)
    assert (await notifier.send(MINIMAL)).startswith("200 OK")
    assert "a test from sluiceway test-alert" in endpoint.received[0].body.decode()


def test_a_bare_test_alert_makes_an_email() -> None:
    msg = build_message(MINIMAL, sender="a@example.com", to=["b@example.com"], name="x")
    assert msg["Subject"] == "[sluiceway] a test from sluiceway test-alert"
    assert msg["X-Sluiceway-Event"] == "test"
