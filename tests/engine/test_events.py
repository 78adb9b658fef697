"""EventBus on its own: subscribe and unsubscribe, fan-out in order, a failing subscriber is
logged and the others still get the event, and truthiness says whether anyone listens."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from runtime.engine.events import Event, EventBus, RunEnded, RunStarted
from runtime.states import RunState

AT = datetime(2026, 1, 1, tzinfo=UTC)
STARTED = RunStarted(AT, 1, "etl")
ENDED = RunEnded(AT, 1, "etl", RunState.SUCCEEDED)


def test_every_subscriber_gets_every_event_in_subscription_order() -> None:
    bus = EventBus()
    seen: list[tuple[str, Event]] = []
    bus.subscribe(lambda e: seen.append(("first", e)))
    bus.subscribe(lambda e: seen.append(("second", e)))
    bus.publish(STARTED)
    bus.publish(ENDED)
    assert seen == [("first", STARTED), ("second", STARTED), ("first", ENDED), ("second", ENDED)]


def test_publishing_to_nobody_is_fine() -> None:
    EventBus().publish(STARTED)


def test_unsubscribe_stops_only_that_subscriber() -> None:
    bus = EventBus()
    first: list[Event] = []
    second: list[Event] = []
    stop_first = bus.subscribe(first.append)
    bus.subscribe(second.append)
    bus.publish(STARTED)
    stop_first()
    bus.publish(ENDED)
    assert first == [STARTED]
    assert second == [STARTED, ENDED]


def test_a_function_subscribed_twice_is_called_twice_until_each_is_removed() -> None:
    bus = EventBus()
    seen: list[Event] = []
    stop_one = bus.subscribe(seen.append)
    stop_other = bus.subscribe(seen.append)
    bus.publish(STARTED)
    assert seen == [STARTED, STARTED]
    stop_one()
    bus.publish(ENDED)
    assert seen == [STARTED, STARTED, ENDED]
    stop_other()
    assert not bus


def test_the_bus_is_true_only_while_someone_listens() -> None:
    bus = EventBus()
    assert not bus
    stop = bus.subscribe(lambda e: None)
    assert bus
    stop()
    assert not bus


def test_a_failing_subscriber_is_logged_and_the_others_still_get_the_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    before: list[Event] = []
    after: list[Event] = []

    def broken(event: Event) -> None:
        raise ValueError("the alert channel is down")

    bus.subscribe(before.append)
    bus.subscribe(broken)
    bus.subscribe(after.append)
    with caplog.at_level(logging.ERROR, logger="sluiceway.runtime.events"):
        bus.publish(STARTED)
        bus.publish(ENDED)
    assert before == after == [STARTED, ENDED]
    messages = [r for r in caplog.records if r.name == "sluiceway.runtime.events"]
    assert [r.getMessage().split(" failed on ")[1] for r in messages] == ["RunStarted", "RunEnded"]
    assert all(r.getMessage().startswith("event subscriber <function ") for r in messages)
    assert all(r.exc_info and r.exc_info[0] is ValueError for r in messages)
    assert bus  # a subscriber that raised is kept


def test_a_base_exception_in_a_subscriber_is_not_swallowed() -> None:
    bus = EventBus()

    def interrupted(event: Event) -> None:
        raise KeyboardInterrupt

    bus.subscribe(interrupted)
    with pytest.raises(KeyboardInterrupt):
        bus.publish(STARTED)


def test_a_subscriber_that_unsubscribes_while_handling_an_event_takes_no_one_else_s() -> None:
    bus = EventBus()
    seen: list[str] = []

    def once(event: Event) -> None:
        seen.append("once")
        stop_once()

    stop_once = bus.subscribe(once)
    bus.subscribe(lambda e: seen.append("other"))
    bus.publish(STARTED)
    assert seen == ["once", "other"]


def test_unsubscribing_twice_does_nothing() -> None:
    bus = EventBus()
    got: list[object] = []
    unsubscribe = bus.subscribe(got.append)
    unsubscribe()
    unsubscribe()  # raised ValueError
    bus.publish(STARTED)
    assert got == []
    assert not bus
