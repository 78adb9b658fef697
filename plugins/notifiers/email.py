"""The email notifier: a multipart text+HTML message over SMTP (aiosmtplib), with STARTTLS,
implicit TLS, or none for a relay on this machine."""

from __future__ import annotations

import html
import logging
import re
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, ClassVar

import aiosmtplib

from plugins.notifiers import facts as f
from plugins.notifiers import options as opt
from runtime import redact
from runtime.abc import DeliveryError, Notifier

__all__ = ["EmailNotifier", "build_message", "message_id"]

log = logging.getLogger("sluiceway.plugins.email")

TLS_MODES = ("starttls", "implicit", "none")
DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
DIGEST_LINES = 50


def message_id(alert_id: object, name: str, sender: str) -> str:
    """``<sluiceway-17.oncall@example.com>``: the same for every delivery of one alert to one
    destination, so a repeat after a crash is recognisable (and threaded as one by clients)."""
    if alert_id is None:
        return make_msgid("sluiceway")
    domain = sender.rpartition("@")[2] or "sluiceway.invalid"
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", f"{alert_id}.{name}")
    return f"<{safe}@{re.sub(r'[^A-Za-z0-9.-]', '-', domain)}>"


def _text(alert: Mapping[str, Any]) -> str:
    out = [f.title(alert), ""]
    if alert.get("kind") == "recovery":
        resolved = ", ".join(str(e) for e in alert.get("resolves") or []) or "earlier alerts"
        out += [f"Back to normal. This resolves: {resolved}.", ""]
    width = max((len(label) for label, _ in f.lines(alert)), default=0)
    out += [f"{label + ':':<{width + 1}} {value}" for label, value in f.lines(alert)]
    error = f.excerpt(alert.get("error"))
    if error:
        out += ["", "Error:", *(f"    {line}" for line in error.splitlines())]
    grouped = f.items(alert)
    if grouped:
        out += ["", f"{len(grouped)} alerts grouped:"]
        out += [f"  - {f.item_line(item)}" for item in grouped[:DIGEST_LINES]]
        if len(grouped) > DIGEST_LINES:
            out.append(f"  ... and {len(grouped) - DIGEST_LINES} more")
    if alert.get("url"):
        out += ["", f"Open: {alert['url']}"]
    out += ["", "-- ", f"sluiceway · alert {alert.get('id')}"]
    return "\n".join(out) + "\n"


def _html(alert: Mapping[str, Any]) -> str:
    e = html.escape
    parts = [f"<h2>{e(f.title(alert))}</h2>"]
    if alert.get("kind") == "recovery":
        resolved = ", ".join(str(x) for x in alert.get("resolves") or []) or "earlier alerts"
        parts.append(f"<p>Back to normal. This resolves: {e(resolved)}.</p>")
    rows = "".join(
        f"<tr><th align='left'>{e(label)}</th><td>{e(value)}</td></tr>"
        for label, value in f.lines(alert)
    )
    if rows:
        parts.append(f"<table>{rows}</table>")
    error = f.excerpt(alert.get("error"))
    if error:
        parts.append(f"<p><b>Error</b></p><pre>{e(error)}</pre>")
    grouped = f.items(alert)
    if grouped:
        lis = "".join(f"<li>{e(f.item_line(item))}</li>" for item in grouped[:DIGEST_LINES])
        more = len(grouped) - DIGEST_LINES
        tail = f"<li>... and {more} more</li>" if more > 0 else ""
        parts.append(f"<p>{len(grouped)} alerts grouped:</p><ul>{lis}{tail}</ul>")
    if alert.get("url"):
        parts.append(f'<p><a href="{e(str(alert["url"]))}">Open in Sluiceway</a></p>')
    parts.append(f"<p><small>sluiceway · alert {e(str(alert.get('id')))}</small></p>")
    return "<!DOCTYPE html>\n<html><body>\n" + "\n".join(parts) + "\n</body></html>\n"


def build_message(
    alert: Mapping[str, Any], *, sender: str, to: list[str], name: str
) -> EmailMessage:
    """The message sent for *alert*: subject ``[sluiceway] <summary>``, a text part and an
    HTML part (``multipart/alternative``, every value escaped), a Message-ID from the alert
    id (:func:`message_id`), ``Auto-Submitted: auto-generated`` so that vacation
    responders stay quiet."""
    msg = EmailMessage()
    msg["Subject"] = f"[sluiceway] {f.title(alert)}"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = message_id(alert.get("id"), name, sender)
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Sluiceway-Event"] = str(alert.get("event") or alert.get("kind") or "alert")
    msg.set_content(_text(alert))
    msg.add_alternative(_html(alert), subtype="html")
    return msg


def _recipients(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else [str(v) for v in value or []]


def _check_addresses(options: Mapping[str, Any]) -> list[str]:
    problems = []
    sender = options.get("from")
    if not isinstance(sender, str) or "@" not in sender:
        problems.append("option 'from' is required: the sender's address (alerts@example.com)")
    to = options.get("to")
    if isinstance(to, str):
        to = [to]
    if not isinstance(to, list) or not to:
        problems.append("option 'to' is required: one address or a list of addresses")
    else:
        problems += [
            f"option 'to': {item!r} is not an email address"
            for item in to
            if not isinstance(item, str) or "@" not in item or "\n" in item
        ]
    return problems


class EmailNotifier(Notifier):
    """Sends each alert as an email through an SMTP server.

    Options: ``host`` (required), ``port`` (default 587 for STARTTLS, 465 for implicit TLS,
    25 without), ``from`` and ``to`` (one address or a list; required), ``username`` and
    ``password`` (both or neither), ``tls`` (``"starttls"``, the default; ``"implicit"``;
    ``"none"``, only for a relay on this machine when a password is set), ``verify`` (check
    the server's certificate, default ``true``), ``ca_file`` (a PEM bundle of CAs to trust, for
    a private CA) and ``timeout`` (seconds or ``"10s"``, default 10). A 5xx answer is a
    permanent failure, a 4xx one is retried.
    """

    plugin = "email"
    KNOWN: ClassVar[frozenset[str]] = frozenset(
        {"host", "port", "from", "to", "username", "password", "tls", "verify", "ca_file"}
        | {"timeout"}
    )

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        redact.register(self.secrets())
        opt.ensure(self.plugin, name, self.check_options(options))
        self.host = str(options["host"])
        self.tls_mode = str(options.get("tls", "starttls"))
        self.port = int(options.get("port") or DEFAULT_PORTS[self.tls_mode])
        self.sender = str(options["from"])
        self.to = _recipients(options["to"])
        self.timeout = opt.timeout_of(options)
        self._context: ssl.SSLContext | None = None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Unknown names, ``host``, ``port``, the addresses, the credentials, ``tls``,
        ``verify``, ``ca_file`` and ``timeout``."""
        problems = [
            *opt.unknown(options, cls.KNOWN),
            *opt.string(options, "host", required=True),
            *_check_addresses(options),
            *opt.string(options, "username"),
            *opt.string(options, "password", secret=True),
            *opt.choice(options, "tls", TLS_MODES),
            *opt.boolean(options, "verify"),
            *opt.string(options, "ca_file"),
            *opt.timeout(options),
        ]
        port = options.get("port")
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            problems.append(f"option 'port' must be a port number (1-65535), not {port!r}")
        if bool(options.get("username")) != bool(options.get("password")):
            problems.append("options 'username' and 'password' go together: set both or neither")
        if (
            options.get("password")
            and options.get("tls") == "none"
            and options.get("host") not in LOOPBACK
        ):
            problems.append(
                "option 'password' would cross the network in clear text with tls = 'none':"
                " use 'starttls' or 'implicit'"
            )
        return problems

    def __repr__(self) -> str:
        return f"EmailNotifier(name={self.name!r}, host={self.host!r}, port={self.port})"

    def _tls_context(self) -> ssl.SSLContext | None:
        if self._context is None and self.options.get("ca_file"):
            self._context = ssl.create_default_context(cafile=str(self.options["ca_file"]))
        return self._context

    async def send(self, alert: Mapping[str, Any]) -> str:
        """Send *alert* to every ``to`` address; returns the server's answer (``"250 OK"``).

        :raises DeliveryError: naming the server's host and its answer (``permanent`` for a
            5xx), or that it could not be reached in time
        """
        msg = build_message(alert, sender=self.sender, to=self.to, name=self.name)
        try:
            refused, answer = await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self.options.get("username"),
                password=self.options.get("password"),
                use_tls=self.tls_mode == "implicit",
                start_tls=self.tls_mode == "starttls",
                validate_certs=self.options.get("verify", True) is not False,
                tls_context=self._tls_context(),
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:
            raise _delivery_error(exc, self.host, self.timeout) from None
        if refused:
            who = ", ".join(f"{addr} ({r.code} {r.message})" for addr, r in refused.items())
            log.warning(
                "notifier=email:%s host=%s refused some recipients: %s",
                self.name,
                self.host,
                redact.redact(who),
            )
            return redact.redact(f"250 {answer}; refused: {who}")
        return redact.redact(f"250 {f.one_line(answer, 120)}")


def _delivery_error(exc: BaseException, host: str, timeout: float) -> DeliveryError:
    """*exc* from aiosmtplib or the network as a :class:`DeliveryError` naming *host*."""
    if isinstance(exc, TimeoutError):
        return DeliveryError(f"{host} did not answer within {timeout:g}s")
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        who = ", ".join(f"{r.recipient} ({r.code} {r.message})" for r in exc.recipients)
        return DeliveryError(
            redact.redact(f"{host} refused every recipient: {who}"),
            status=max(codes, default=None),
            permanent=bool(codes) and min(codes) >= 500,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f.one_line(redact.redact(exc.message), 200)
        return DeliveryError(
            f"{host} answered {exc.code} {text}", status=exc.code, permanent=exc.code >= 500
        )
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        text = f.one_line(redact.redact(exc.message), 200)
        return DeliveryError(f"{host}: {text}", permanent=True)
    if isinstance(exc, aiosmtplib.SMTPConnectError | OSError):
        cause = exc.__cause__ or exc
        reason = getattr(cause, "strerror", None) or getattr(cause, "reason", None) or ""
        detail = f"{type(cause).__name__}" + (f": {redact.redact(str(reason))}" if reason else "")
        return DeliveryError(f"cannot reach {host}: {detail}")
    return DeliveryError(f"{host}: {type(exc).__name__}: {redact.redact(str(exc))[:200]}")
