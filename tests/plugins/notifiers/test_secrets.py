"""The canary: a secret planted in a URL, a routing key, an HMAC secret, a header and a
password appears in no error message, repr, traceback or log record of any failing
delivery, whatever way it fails."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugins.notifiers.email import EmailNotifier
from plugins.notifiers.http import HttpNotifier
from plugins.notifiers.pagerduty import PagerDutyNotifier
from plugins.notifiers.slack import SlackNotifier
from plugins.notifiers.webhook import WebhookNotifier
from runtime import redact
from runtime.abc import DeliveryError, Notifier
from runtime.errors import ConfigError
from tests.plugins.notifiers.conftest import CANARY, Endpoint, Reply, alert
from tests.plugins.notifiers.smtp import USER, Mailbox, certificates, free_port, smtp_server

KINDS: dict[str, Callable[[str], HttpNotifier]] = {
    "webhook": lambda url: WebhookNotifier(
        "ops",
        {"url": url, "secret": CANARY, "headers": {"Authorization": f"Bearer {CANARY}"}},
    ),
    "slack": lambda url: SlackNotifier("data-team", {"url": url}),
    "pagerduty": lambda url: PagerDutyNotifier("oncall", {"url": url, "routing_key": CANARY}),
}

SERVER_LOGGERS = ("mail.log", "aiohttp.access", "aiohttp.server", "aiohttp.web")
"""The stand-in servers' own logs (they see the URL they are called on; they are not ours)."""

FAILURES = {
    "500": Reply(500, "Internal error"),
    "404-echoing-the-path": Reply(404, f"no hook at /services/{CANARY}"),
    "429": Reply(429, "slow down", {"Retry-After": "3"}),
    "hang": Reply(hang=True),
}


def outputs(error: BaseException, notifier: Notifier, caplog: pytest.LogCaptureFixture) -> str:
    """Every text a failing delivery can surface: message, repr, args, traceback, the
    notifier's repr and every log record of the client side (not the stand-in server's).
    Also checks that the library's exception is not chained: its text may hold the URL."""
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    records = [r for r in caplog.records if not r.name.startswith(SERVER_LOGGERS)]
    texts = [
        str(error),
        repr(error),
        repr(error.args),
        "".join(traceback.format_exception(error)),
        repr(notifier),
        *(r.getMessage() for r in records),
        *(r.exc_text or "" for r in records),
        *("".join(traceback.format_exception(*r.exc_info)) for r in records if r.exc_info),
    ]
    return "\n".join(texts)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


@pytest.mark.parametrize("failure", FAILURES)
@pytest.mark.parametrize("kind", KINDS)
async def test_no_answer_shows_the_canary(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture, kind: str, failure: str
) -> None:
    endpoint.answer(FAILURES[failure])
    notifier = KINDS[kind](endpoint.url(f"/services/{CANARY}"))
    notifier.timeout = 0.3
    with pytest.raises(DeliveryError) as info:
        await notifier.send(alert())
    assert endpoint.received  # it did reach the endpoint
    assert CANARY not in outputs(info.value, notifier, caplog)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/services/" + CANARY,
        "http://user:" + CANARY + "@127.0.0.1:{port}/hook",
        "http://no-such-host.invalid/services/" + CANARY,
        "http://127.0.0.1:{port}/services/" + CANARY + "?token=" + CANARY,
        "http://a..b/services/" + CANARY,
        "http://[::1/" + CANARY,
    ],
    ids=["refused", "password-in-url", "dns", "query", "bad-host", "malformed"],
)
@pytest.mark.parametrize("kind", KINDS)
async def test_no_unreachable_endpoint_shows_the_canary(
    closed_port: int, caplog: pytest.LogCaptureFixture, kind: str, url: str
) -> None:
    notifier = KINDS[kind](url.format(port=closed_port)) if "[" not in url else None
    if notifier is None:  # a URL the option check refuses: the refusal must not show it
        with pytest.raises(ConfigError, match=r"option .url. is not a valid URL") as refused:
            KINDS[kind](url)
        assert CANARY not in str(refused.value)
        return
    with pytest.raises(DeliveryError) as info:
        await notifier.send(alert())
    assert CANARY not in outputs(info.value, notifier, caplog)


async def test_a_delivered_alert_logs_no_canary(
    endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    for make in KINDS.values():
        notifier = make(endpoint.url(f"/services/{CANARY}"))
        await notifier.send(alert())
    assert len(endpoint.received) == len(KINDS)
    assert caplog.records  # the debug lines were there to search
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith(SERVER_LOGGERS)]
    assert CANARY not in "\n".join(ours)


@pytest.mark.parametrize("case", ["wrong-password", "untrusted", "refused-port", "recipient"])
async def test_no_email_failure_shows_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    certs = certificates(tmp_path)
    mailbox = Mailbox(password="not-the-canary" if case == "wrong-password" else CANARY)
    with smtp_server(mailbox, "starttls", certs) as port:
        options: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": free_port() if case == "refused-port" else port,
            "from": "sluiceway@example.com",
            "to": "nobody@example.com" if case == "recipient" else "data@example.com",
            "username": USER,
            "password": CANARY,
            "timeout": 5,
        }
        if case != "untrusted":
            options["ca_file"] = str(certs.ca_file)
        notifier = EmailNotifier("oncall", options)
        with pytest.raises(DeliveryError) as info:
            await notifier.send(alert())
    assert CANARY not in outputs(info.value, notifier, caplog)


def test_every_secret_is_registered_for_masking() -> None:
    WebhookNotifier(
        "ops",
        {
            "url": "https://ops.example/hooks/abcdef",
            "secret": "hmac-" + CANARY,
            "headers": {"X-Api-Key": "key-" + CANARY},
        },
    )
    PagerDutyNotifier("oncall", {"routing_key": "rk-" + CANARY})
    EmailNotifier(
        "mail",
        {
            "host": "h.example",
            "from": "a@e.x",
            "to": "b@e.x",
            "username": "u",
            "password": "pw-" + CANARY,
        },
    )
    registered = redact.secrets()
    for value in ("https://ops.example/hooks/abcdef", "/hooks/abcdef"):
        assert value in registered
    for prefix in ("hmac-", "key-", "rk-", "pw-"):
        assert prefix + CANARY in registered


def test_options_are_registered_even_when_they_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"unknown option .bogus."):
        SlackNotifier("x", {"url": f"https://hooks.slack.example/services/{CANARY}", "bogus": 1})
    assert redact.redact(f"POST /services/{CANARY}") == "POST ***"
