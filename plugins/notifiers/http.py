"""What the HTTP notifiers share: POST a body to the endpoint under a timeout, and turn every
way that fails into a :class:`~runtime.abc.DeliveryError` that names the status and the host,
never the URL (a Slack webhook's URL is its credential, and aiohttp's own errors print it).

A client session is opened per delivery and closed when the answer is read. Alerts are rare
(a digest groups storms), so reusing connections saves nothing worth having, while a session
per delivery cannot outlive its event loop or leak at shutdown, whoever calls the notifier.
"""

from __future__ import annotations

import logging
import math
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from functools import cache
from http import HTTPStatus
from importlib.metadata import PackageNotFoundError, version
from typing import Any, ClassVar

import aiohttp

from plugins.notifiers import options as opt
from plugins.notifiers.facts import one_line
from runtime import redact
from runtime.abc import DeliveryError, Notifier

__all__ = ["Answer", "HttpNotifier", "parse_retry_after", "post"]

log = logging.getLogger("sluiceway.plugins.notifiers")

BODY_EXCERPT = 200  # characters of an error answer's body kept in the message
READ_AT_MOST = 64 * 1024  # bytes of an answer read: a notifier needs "ok", not a page


@dataclass(frozen=True, slots=True)
class Answer:
    """A 2xx answer: its status, reason and (the start of) its body."""

    status: int
    reason: str
    body: str

    def __str__(self) -> str:
        text = one_line(self.body, 80)
        return f"{self.status} {self.reason}" + (f": {text}" if text else "")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, given in seconds or as an HTTP date;
    *now* is the current POSIX time. ``None`` when absent or unreadable."""
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@cache
def user_agent() -> str:
    """``sluiceway/<version>`` (the installed distribution's version)."""
    try:
        return f"sluiceway/{version('sluiceway')}"
    except PackageNotFoundError:
        return "sluiceway"


def failure(host: str, status: int, reason: str, body: str) -> str:
    """The message of a non-2xx answer: status, reason, host and a masked excerpt of the body."""
    text = one_line(redact.redact(body), BODY_EXCERPT)
    message = f"{host} answered {status} {reason}" + (f": {text}" if text else "")
    if 300 <= status < 400:
        message += " (redirects are not followed: configure the final URL)"
    return message


def _reason(status: int, reason: str | None) -> str:
    if reason:
        return reason
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


async def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    host: str,
    within: float,
    tls: ssl.SSLContext | bool = True,
) -> Answer:
    """POST *body* to *url* and return the 2xx :class:`Answer`.

    :param host: what messages name instead of the URL
    :param within: seconds for the whole exchange (connect, send, answer)
    :param tls: an SSL context, ``True`` for the default checks, ``False`` for none
    :raises DeliveryError: on any other answer (``permanent`` for a 4xx other than 408 and
        429, ``retry_after`` from a 429's or 503's header) or when the endpoint cannot be
        reached in time; its cause is suppressed, as aiohttp's errors show the URL
    """
    started = time.monotonic()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within)) as session,
            session.post(
                url, data=body, headers=headers, allow_redirects=False, ssl=tls
            ) as response,
        ):
            raw = await response.content.read(READ_AT_MOST)
            status, reason = response.status, _reason(response.status, response.reason)
            answer_headers = dict(response.headers)
    except TimeoutError:
        raise DeliveryError(f"{host} did not answer within {within:g}s") from None
    except aiohttp.ClientConnectorError as exc:
        raise DeliveryError(f"cannot reach {host}: {_os_error(exc)}") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        # InvalidURL, a dropped connection, a malformed answer: their text can hold the URL
        raise DeliveryError(f"{host}: {type(exc).__name__} while sending") from None
    text = raw.decode("utf-8", errors="replace")
    log.debug("host=%s answered %d in %.0f ms", host, status, (time.monotonic() - started) * 1e3)
    if 200 <= status < 300:
        return Answer(status, reason, text)
    wait = None
    if status in (429, 503):
        wait = parse_retry_after(answer_headers.get("Retry-After"), time.time())
    raise DeliveryError(
        failure(host, status, reason, text),
        status=status,
        retry_after=wait,
        permanent=400 <= status < 500 and status not in (408, 429),
    )


def _os_error(exc: aiohttp.ClientConnectorError) -> str:
    """The cause of a failed connect, without the URL: ``ConnectionRefusedError``,
    ``gaierror: Name or service not known``, ``SSLCertVerificationError: ...``."""
    cause = exc.os_error
    reason = getattr(cause, "strerror", None) or getattr(cause, "reason", None) or ""
    return f"{type(cause).__name__}" + (f": {redact.redact(str(reason))}" if reason else "")


class HttpNotifier(Notifier):
    """A notifier that POSTs to an HTTP endpoint given as the ``url`` option.

    Options every HTTP notifier takes: ``url`` (the endpoint; secret), ``timeout`` (seconds or
    ``"10s"``, default 10), ``verify`` (check the server's certificate, default ``true``) and
    ``ca_file`` (a PEM bundle of CAs to trust instead of the system's, for a private CA).
    """

    KNOWN: ClassVar[frozenset[str]] = frozenset({"url", "timeout", "verify", "ca_file"})
    DEFAULT_URL: ClassVar[str | None] = None
    URL_EXAMPLE: ClassVar[str] = ""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        redact.register(self.secrets())  # before anything can fail and print them
        opt.ensure(self.plugin, name, self.check_options(options))
        self.url = str(options.get("url") or self.DEFAULT_URL)
        self.host = opt.host_of(self.url)
        self.timeout = opt.timeout_of(options)
        self._tls: ssl.SSLContext | bool | None = None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Unknown names, the URL, the timeout, ``verify`` and ``ca_file``."""
        return [
            *opt.unknown(options, cls.KNOWN),
            *opt.url(options, required=cls.DEFAULT_URL is None, example=cls.URL_EXAMPLE),
            *opt.timeout(options),
            *opt.boolean(options, "verify"),
            *opt.string(options, "ca_file"),
        ]

    def secrets(self) -> list[str]:
        """``url``, ``secret``, ``routing_key``, ``password``, ``token`` and the values of
        credential-like headers (``Authorization``, ``X-Api-Key``, ...)."""
        return [*super().secrets(), *opt.secret_header_values(self.options)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, host={self.host!r})"

    def tls(self) -> ssl.SSLContext | bool:
        """What ``ssl=`` aiohttp gets: the default checks, a context trusting ``ca_file``, or
        ``False`` when ``verify = false``. Made once (loading CAs takes milliseconds)."""
        if self._tls is None:
            if self.options.get("verify") is False:
                self._tls = False
            elif self.options.get("ca_file"):
                self._tls = ssl.create_default_context(cafile=str(self.options["ca_file"]))
            else:
                self._tls = True
        return self._tls

    async def post(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST *body* (JSON) to the endpoint with *headers* (see :func:`post`)."""
        sent = {"Content-Type": "application/json", "User-Agent": user_agent(), **headers}
        return await post(self.url, body, sent, host=self.host, within=self.timeout, tls=self.tls())
