"""The email notifier against a real SMTP server (aiosmtpd): plain, STARTTLS and implicit TLS
with a trustme CA, a multipart text+HTML message, and the server's refusals."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugins.notifiers.email import EmailNotifier, build_message
from runtime.abc import DeliveryError
from runtime.errors import ConfigError
from tests.plugins.notifiers.conftest import CANARY, alert
from tests.plugins.notifiers.smtp import (
    USER,
    Certificates,
    Mailbox,
    certificates,
    free_port,
    smtp_server,
)


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return certificates(tmp_path)


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox(password=CANARY)


@pytest.fixture(params=["none", "starttls", "implicit"])
def served(
    request: pytest.FixtureRequest, mailbox: Mailbox, certs: Certificates
) -> Iterator[tuple[str, int]]:
    with smtp_server(mailbox, request.param, certs) as port:
        yield request.param, port


def options(port: int, tls: str, certs: Certificates, **more: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "from": "sluiceway@example.com",
        "to": ["data@example.com", "oncall@example.com"],
        "tls": tls,
        "ca_file": str(certs.ca_file),
        "timeout": 5,
    }
    if tls != "none":
        base |= {"username": USER, "password": CANARY}
    return base | more


async def test_a_message_is_delivered_in_every_tls_mode(
    served: tuple[str, int], mailbox: Mailbox, certs: Certificates
) -> None:
    tls, port = served
    answer = await EmailNotifier("oncall", options(port, tls, certs)).send(alert())
    assert answer.startswith("250 ")
    (got,) = mailbox.delivered
    assert got.tls is (tls != "none")
    assert mailbox.logins == ([] if tls == "none" else [USER])
    assert got.sender == "sluiceway@example.com"
    assert got.recipients == ["data@example.com", "oncall@example.com"]
    msg = got.message
    assert msg["Subject"] == "[sluiceway] orders run 12 failed: failed tasks: load"
    assert msg["Message-ID"] == "<sluiceway-17.oncall@example.com>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]


async def test_one_address_as_to(mailbox: Mailbox, certs: Certificates) -> None:
    with smtp_server(mailbox, "none", certs) as port:
        await EmailNotifier("ops", options(port, "none", certs, to="ops@example.com")).send(alert())
    assert mailbox.delivered[0].recipients == ["ops@example.com"]


def parts(msg: Any) -> tuple[str, str]:
    text, html = (part.get_content() for part in msg.iter_parts())
    return text, html


def test_the_text_part_lists_the_facts() -> None:
    text, _ = parts(build_message(alert(), sender="a@example.com", to=["b@x.example"], name="o"))
    assert text.splitlines()[0] == "orders run 12 failed: failed tasks: load"
    assert "Flow:         orders" in text
    assert "Run:          12" in text
    assert "    ConnectionError: warehouse refused the connection" in text
    assert "Open: https://sluiceway.example/runs/12" in text


def test_the_html_part_escapes_everything() -> None:
    nasty = alert(
        summary="<script>alert(1)</script>",
        error="x < y & z",
        url='https://s.example/runs/12?"><img src=x>',
        details={"check": "<b>row_count</b>"},
    )
    _, html = parts(build_message(nasty, sender="a@example.com", to=["b@x.example"], name="o"))
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "x &lt; y &amp; z" in html
    assert "<b>row_count</b>" not in html
    assert '"><img' not in html
    assert 'href="https://s.example/runs/12?&quot;&gt;&lt;img src=x&gt;"' in html


def test_a_digest_and_a_recovery_read_well() -> None:
    items = [alert(run_id=n, summary=f"orders run {n} failed", ts=f"t{n}") for n in range(3)]
    text, html = parts(
        build_message(alert(kind="digest", items=items), sender="a@e.x", to=["b@e.x"], name="o")
    )
    assert "3 alerts grouped:\n  - t0: orders run 0 failed\n" in text
    assert "<li>t2: orders run 2 failed</li>" in html
    recovery = alert(kind="recovery", error=None, resolves=["run.failed"], summary="orders ok")
    text, _ = parts(build_message(recovery, sender="a@e.x", to=["b@e.x"], name="o"))
    assert "Back to normal. This resolves: run.failed." in text


def test_the_message_id_is_the_same_for_a_repeat() -> None:
    first = build_message(alert(), sender="a@example.com", to=["b@e.x"], name="oncall")
    again = build_message(alert(), sender="a@example.com", to=["b@e.x"], name="oncall")
    other = build_message(
        alert(id="sluiceway-18"), sender="a@example.com", to=["b@e.x"], name="oncall"
    )
    assert first["Message-ID"] == again["Message-ID"] != other["Message-ID"]


async def test_a_wrong_password_is_permanent(mailbox: Mailbox, certs: Certificates) -> None:
    mailbox.password = "another-password"
    with smtp_server(mailbox, "starttls", certs) as port, pytest.raises(DeliveryError) as info:
        await EmailNotifier("oncall", options(port, "starttls", certs)).send(alert())
    assert str(info.value).startswith("127.0.0.1 answered 535 ")
    assert (info.value.status, info.value.permanent) == (535, True)
    assert mailbox.delivered == []


async def test_refused_recipients(mailbox: Mailbox, certs: Certificates) -> None:
    with smtp_server(mailbox, "none", certs) as port:
        some = options(port, "none", certs, to=["nobody@example.com", "data@example.com"])
        answer = await EmailNotifier("ops", some).send(alert())
        assert "refused: nobody@example.com (550" in answer
        with pytest.raises(DeliveryError) as info:
            await EmailNotifier("ops", options(port, "none", certs, to="nobody@x.io")).send(alert())
    assert str(info.value).startswith("127.0.0.1 refused every recipient: nobody@x.io (550 ")
    assert info.value.permanent
    assert [d.recipients for d in mailbox.delivered] == [["data@example.com"]]


async def test_an_untrusted_certificate_is_refused(mailbox: Mailbox, certs: Certificates) -> None:
    with smtp_server(mailbox, "implicit", certs) as port:
        untrusted = options(port, "implicit", certs)
        del untrusted["ca_file"]
        with pytest.raises(DeliveryError) as info:
            await EmailNotifier("oncall", untrusted).send(alert())
        assert str(info.value).startswith("cannot reach 127.0.0.1: ")
        assert "CERTIFICATE_VERIFY_FAILED" in str(info.value) or "SSL" in str(info.value)
        unchecked = options(port, "implicit", certs, verify=False)
        del unchecked["ca_file"]
        assert (await EmailNotifier("oncall", unchecked).send(alert())).startswith("250 ")
    assert len(mailbox.delivered) == 1


async def test_starttls_against_a_plain_server_is_permanent(
    mailbox: Mailbox, certs: Certificates
) -> None:
    with smtp_server(mailbox, "none", certs) as port, pytest.raises(DeliveryError) as info:
        await EmailNotifier("oncall", options(port, "starttls", certs)).send(alert())
    assert info.value.permanent
    assert "STARTTLS" in str(info.value).upper()


async def test_a_closed_port(certs: Certificates) -> None:
    with pytest.raises(DeliveryError) as info:
        await EmailNotifier("oncall", options(free_port(), "none", certs)).send(alert())
    assert str(info.value).startswith("cannot reach 127.0.0.1: ")
    assert not info.value.permanent


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"host": None}, "option 'host' is required"),
        ({"from": "nobody"}, "option 'from' is required: the sender's address"),
        ({"from": "a@example.com\nBcc: x@evil.example"}, "option 'from' is required"),
        ({"to": []}, "option 'to' is required"),
        ({"to": ["ok@example.com", "bad"]}, "option 'to': 'bad' is not an email address"),
        ({"tls": "ssl"}, "option 'tls' must be one of 'starttls', 'implicit', 'none'"),
        ({"port": 70000}, "option 'port' must be a port number (1-65535), not 70000"),
        ({"password": None}, "options 'username' and 'password' go together"),
        ({"tls": "none", "host": "mail.example"}, "option 'password' would cross the network"),
        ({"smtp_host": "x"}, "unknown option 'smtp_host'"),
    ],
)
def test_bad_options_are_named(changes: dict[str, Any], problem: str) -> None:
    good = {
        "host": "127.0.0.1",
        "from": "a@example.com",
        "to": "b@example.com",
        "username": "u",
        "password": CANARY,
    }
    assert EmailNotifier.check_options(good) == []
    bad = {k: v for k, v in (good | changes).items() if v is not None}
    problems = EmailNotifier.check_options(bad)
    assert len(problems) == 1
    assert problems[0].startswith(problem)
    assert CANARY not in problems[0]
    with pytest.raises(ConfigError, match=r"^notifier email:oncall: "):
        EmailNotifier("oncall", bad)


def test_default_ports_follow_the_tls_mode() -> None:
    base = {"host": "h.example", "from": "a@example.com", "to": "b@example.com"}
    ports = [EmailNotifier("x", base | {"tls": t}).port for t in ("starttls", "implicit", "none")]
    assert ports == [587, 465, 25]


async def silent_server(close: bool) -> tuple[asyncio.Server, asyncio.Event]:
    """A TCP server on 127.0.0.1 that never says hello (or, with *close*, hangs up at once)."""
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not close:
            await release.wait()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, release


@pytest.mark.parametrize(
    ("close", "message"),
    [
        (False, "127.0.0.1 did not answer within 0.3s"),
        (True, "cannot reach 127.0.0.1: SMTPServerDisconnected"),
    ],
    ids=["silent", "hangs-up"],
)
async def test_a_server_that_never_greets(certs: Certificates, close: bool, message: str) -> None:
    server, release = await silent_server(close)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(DeliveryError) as info:
            await EmailNotifier("oncall", options(port, "none", certs, timeout=0.3)).send(alert())
    finally:
        release.set()
        server.close()
        await server.wait_closed()
    assert str(info.value) == message
    assert not info.value.permanent
