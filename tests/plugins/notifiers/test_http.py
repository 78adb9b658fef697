"""Delivery over HTTP against a real local server: what counts as delivered, and every way a
POST fails, as a DeliveryError that names the status and host (never the URL), is permanent
only when retrying cannot help, and carries the wait a 429 or 503 asked for."""

from __future__ import annotations

import traceback
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from plugins.notifiers.http import parse_retry_after
from plugins.notifiers.webhook import WebhookNotifier
from runtime.abc import DeliveryError
from tests.plugins.notifiers.conftest import Endpoint, Reply, alert

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(minutes=5), usegmt=True), 0.0),
        ("Fri, 02 Jan 2026 12:01:00", 60.0),  # no zone: HTTP dates are GMT
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
    ids=[
        "seconds",
        "padded",
        "fraction",
        "negative-is-now",
        "http-date",
        "past-date-is-now",
        "date-without-zone",
        "garbage",
        "empty",
        "absent",
        "nan",
    ],
)
def test_retry_after_is_read_as_seconds_or_a_date(header: str | None, expected: float) -> None:
    assert parse_retry_after(header, NOW.timestamp()) == expected


def webhook(url: str, **options: object) -> WebhookNotifier:
    return WebhookNotifier("ops", {"url": url, **options})


async def failure(notifier: WebhookNotifier) -> DeliveryError:
    with pytest.raises(DeliveryError) as info:
        await notifier.send(alert())
    return info.value


async def test_a_2xx_answer_is_delivered(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(204, ""))
    assert await webhook(endpoint.url()).send(alert()) == "204 No Content"
    endpoint.answer(Reply(202, "queued"))
    assert await webhook(endpoint.url()).send(alert()) == "202 Accepted: queued"


async def test_a_500_is_worth_retrying_and_names_the_host_only(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(500, "boom"))
    error = await failure(webhook(endpoint.url("/hooks/T000/B000/XXXXXXXX")))
    assert str(error) == "127.0.0.1 answered 500 Internal Server Error: boom"
    assert (error.status, error.permanent, error.retry_after) == (500, False, None)
    assert "/hooks" not in str(error)


async def test_a_500_then_success(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(500, "boom"), Reply(200, "ok"))
    notifier = webhook(endpoint.url())
    await failure(notifier)
    assert await notifier.send(alert()) == "200 OK: ok"
    assert len(endpoint.received) == 2


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (401, True), (404, True), (410, True), (408, False), (429, False), (502, False)],
)
async def test_a_4xx_other_than_408_and_429_is_permanent(
    endpoint: Endpoint, status: int, permanent: bool
) -> None:
    endpoint.answer(Reply(status, "no_service"))
    error = await failure(webhook(endpoint.url()))
    assert (error.status, error.permanent) == (status, permanent)


async def test_a_429_carries_retry_after_in_seconds(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(429, "rate_limited", {"Retry-After": "7"}))
    error = await failure(webhook(endpoint.url()))
    assert (error.status, error.retry_after, error.permanent) == (429, 7.0, False)


async def test_a_503_carries_retry_after_as_an_http_date(endpoint: Endpoint) -> None:
    later = datetime.now(UTC) + timedelta(seconds=90)
    endpoint.answer(Reply(503, "", {"Retry-After": format_datetime(later, usegmt=True)}))
    error = await failure(webhook(endpoint.url()))
    assert error.status == 503
    assert error.retry_after is not None
    assert 60 < error.retry_after <= 90


async def test_retry_after_is_ignored_on_other_statuses(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(500, "", {"Retry-After": "7"}))
    assert (await failure(webhook(endpoint.url()))).retry_after is None


async def test_an_endpoint_that_never_answers_times_out(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(hang=True))
    error = await failure(webhook(endpoint.url(), timeout=0.3))
    assert str(error) == "127.0.0.1 did not answer within 0.3s"
    assert (error.status, error.permanent) == (None, False)
    assert len(endpoint.received) == 1


async def test_a_refused_connection_says_so_without_its_cause(closed_port: int) -> None:
    error = await failure(webhook(f"http://127.0.0.1:{closed_port}/hooks/abcdefgh"))
    assert str(error).startswith("cannot reach 127.0.0.1: ConnectionRefusedError: ")
    assert error.__cause__ is None
    assert error.__suppress_context__
    assert "abcdefgh" not in "".join(traceback.format_exception(error))


async def test_an_unknown_host_says_so() -> None:
    error = await failure(webhook("http://no-such-host.invalid/hook", timeout=5))
    assert str(error).startswith("cannot reach no-such-host.invalid: ")


async def test_a_redirect_is_not_followed(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(301, "", {"Location": "http://elsewhere.invalid/"}))
    error = await failure(webhook(endpoint.url()))
    assert error.status == 301
    assert "redirects are not followed" in str(error)
    assert len(endpoint.received) == 1


async def test_a_long_error_body_is_cut_and_flattened(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(500, "line one\nline two " + "x" * 1000))
    message = str(await failure(webhook(endpoint.url())))
    assert "\n" not in message
    assert "line one line two" in message
    assert len(message) < 300
