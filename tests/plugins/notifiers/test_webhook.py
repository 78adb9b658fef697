"""The generic webhook against a real local server: the body is the alert's facts, signed
over its exact bytes, with the idempotency key and custom headers; options are checked."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import pytest

from plugins.notifiers.facts import FIELDS
from plugins.notifiers.webhook import WebhookNotifier, sign
from runtime.errors import ConfigError
from tests.plugins.notifiers.conftest import Endpoint, alert


async def test_the_body_is_the_alerts_facts(endpoint: Endpoint) -> None:
    sent = alert(details={"check": "row_count"}, extra_field="not a fact")
    assert await WebhookNotifier("ops", {"url": endpoint.url()}).send(sent) == "200 OK: ok"
    (request,) = endpoint.received
    assert (request.method, request.path) == ("POST", "/hook")
    body = request.json()
    assert list(body) == list(FIELDS)
    assert body == {k: v for k, v in sent.items() if k in FIELDS}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == "sluiceway-17"
    assert request.headers["X-Sluiceway-Event"] == "run.failed"
    assert request.headers["User-Agent"].startswith("sluiceway")
    assert "X-Sluiceway-Signature" not in request.headers


async def test_a_missing_field_is_null_and_items_stay_lists(endpoint: Endpoint) -> None:
    await WebhookNotifier("ops", {"url": endpoint.url()}).send({"id": 3, "kind": "test"})
    body = endpoint.received[0].json()
    assert body["flow"] is None
    assert (body["items"], body["resolves"]) == ([], [])
    assert endpoint.received[0].headers["Idempotency-Key"] == "3"


async def test_the_signature_is_the_hmac_of_the_exact_body(endpoint: Endpoint) -> None:
    secret = "hmac-secret-value"
    await WebhookNotifier("ops", {"url": endpoint.url(), "secret": secret}).send(alert())
    (request,) = endpoint.received
    expected = hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["X-Sluiceway-Signature"] == f"sha256={expected}"
    assert sign("other-secret", request.body) != request.headers["X-Sluiceway-Signature"]


async def test_a_digest_carries_its_items(endpoint: Endpoint) -> None:
    items = [alert(id=f"sluiceway-{n}", run_id=n, summary=f"run {n} failed") for n in range(3)]
    await WebhookNotifier("ops", {"url": endpoint.url()}).send(alert(kind="digest", items=items))
    body = endpoint.received[0].json()
    assert [item["run_id"] for item in body["items"]] == [0, 1, 2]
    assert set(body["items"][0]) == set(FIELDS)


async def test_custom_headers_are_sent(endpoint: Endpoint) -> None:
    options = {"url": endpoint.url(), "headers": {"Authorization": "Bearer abcdef", "X-Team": "d"}}
    await WebhookNotifier("ops", options).send(alert())
    headers = endpoint.received[0].headers
    assert (headers["Authorization"], headers["X-Team"]) == ("Bearer abcdef", "d")


def test_secrets_are_the_url_the_secret_and_credential_headers() -> None:
    options = {
        "url": "https://ops.example/hooks/abcdef",
        "secret": "hmac-secret-value",
        "headers": {"Authorization": "Bearer abcdef", "X-Api-Key": "k-123456", "X-Team": "data"},
    }
    notifier = WebhookNotifier("ops", options)
    assert sorted(notifier.secrets()) == sorted(
        ["https://ops.example/hooks/abcdef", "hmac-secret-value", "Bearer abcdef", "k-123456"]
    )
    assert repr(notifier) == "WebhookNotifier(name='ops', host='ops.example')"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "option 'url' is required"),
        ({"url": "ftp://ops.example/x"}, "option 'url' must be an http:// or https:// URL"),
        ({"url": "not a url at all"}, "option 'url' must be an http:// or https:// URL"),
        ({"url": 5}, "option 'url' must be a string, not int"),
        ({"url": "https://x.example", "secret": 5}, "option 'secret' must be a string, not int"),
        ({"url": "https://x.example", "timeout": "soon"}, "option 'timeout' 'soon' is not"),
        ({"url": "https://x.example", "timeout": 0}, "option 'timeout' must be more than 0"),
        ({"url": "https://x.example", "timout": 3}, "unknown option 'timout' (did you mean"),
        ({"url": "https://x.example", "verify": "no"}, "option 'verify' must be true or false"),
        ({"url": "https://x.example", "headers": "x"}, "option 'headers' must be a table"),
        (
            {"url": "https://x.example", "headers": {"Idempotency-Key": "1"}},
            "option 'headers': 'Idempotency-Key' is set by the notifier itself",
        ),
        (
            {"url": "https://x.example", "headers": {"X-A": "a\nb"}},
            "option 'headers': the value of 'X-A' must be a one-line string",
        ),
    ],
)
def test_bad_options_are_named(options: dict[str, Any], problem: str) -> None:
    problems = WebhookNotifier.check_options(options)
    assert len(problems) == 1
    assert problems[0].startswith(problem)
    with pytest.raises(ConfigError, match=r"^notifier webhook:ops: "):
        WebhookNotifier("ops", options)


def test_a_bad_url_is_described_not_shown() -> None:
    (problem,) = WebhookNotifier.check_options({"url": "ftp://ops.example/hooks/abcdef"})
    assert "abcdef" not in problem


def test_good_options_have_no_problem() -> None:
    options = {
        "url": "https://ops.example/hooks",
        "secret": "s",
        "headers": {"X-Team": "data"},
        "timeout": "15s",
        "verify": True,
    }
    assert WebhookNotifier.check_options(options) == []
    assert WebhookNotifier("ops", options).timeout == 15.0
    assert WebhookNotifier("ops", {"url": "https://ops.example/"}).timeout == 10.0
