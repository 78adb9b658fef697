"""``[api]`` checked, and its socket bound, before the service starts anything: a
misconfigured API or a busy port refuses the start with one line naming the setting."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, field

from runtime.config import ApiConfig
from runtime.errors import ConfigError

log = logging.getLogger("sluiceway.runtime.api")

SHORT_TOKEN = 16  # a shorter token is accepted with a warning


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """What the server needs from ``[api]``, checked.

    :ivar host: the host to bind, without brackets (``::1``, ``127.0.0.1``, ``localhost``)
    :ivar port: the port (0 picks a free one: tests)
    :ivar token: the bearer token; ``None`` only with ``auth = "none"``
    """

    host: str
    port: int
    token: str | None = field(repr=False)

    @property
    def auth(self) -> bool:
        """Whether requests must carry the token."""
        return self.token is not None


def split_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:8765`` for IPv6) as (host, port)."""
    host, _, port = bind.rpartition(":")
    return host.removeprefix("[").removesuffix("]"), int(port)


def is_loopback(host: str) -> bool:
    """Whether *host* is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def api_settings(config: ApiConfig) -> ApiSettings | None:
    """``[api]`` checked; ``None`` when no ``bind`` is set (no server).

    :raises ConfigError: no token without ``auth = "none"``, or ``auth = "none"`` on a bind
        that is not a loopback address
    """
    if config.bind is None:
        return None
    host, port = split_bind(config.bind)
    if config.auth == "none":
        if not is_loopback(host):
            raise ConfigError(
                f'[api] auth = "none" serves without a token, which is only allowed on a '
                f"loopback bind (127.0.0.1, ::1, localhost), not [api] bind = {config.bind!r}"
            )
        return ApiSettings(host, port, None)
    if not config.token:
        raise ConfigError(
            f"[api] bind = {config.bind!r} needs a token: set [api] token or "
            'SLUICEWAY_API_TOKEN (or auth = "none" on a loopback bind)'
        )
    if len(config.token) < SHORT_TOKEN:
        log.warning("[api] token is shorter than %d characters: easy to guess", SHORT_TOKEN)
    return ApiSettings(host, port, config.token)


@dataclass(slots=True)
class Listener:
    """The API's bound, listening socket and its settings, made before the service starts;
    the server serves on it. :meth:`close` is safe to call twice."""

    settings: ApiSettings
    sock: socket.socket

    @property
    def url(self) -> str:
        """``http://host:port`` of the bound address (the actual port when 0 was asked)."""
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def close(self) -> None:
        self.sock.close()


def listen(settings: ApiSettings) -> Listener:
    """Bind and listen on the settings' address (never every interface: the host is
    explicit).

    :raises ConfigError: when the address cannot be bound (in use, not this machine's)
    """
    where = f"{settings.host}:{settings.port}"
    try:
        infos = socket.getaddrinfo(
            settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, _, _, _, address = infos[0]
        sock = socket.create_server(address, family=family, backlog=128)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"[api] bind = {where!r}: cannot listen there: {why}") from None
    return Listener(settings, sock)


def open_listener(config: ApiConfig) -> Listener | None:
    """:func:`api_settings` then :func:`listen`; ``None`` without ``[api] bind``.

    :raises ConfigError: see both
    """
    settings = api_settings(config)
    return None if settings is None else listen(settings)
