"""``[api]`` checked, and its socket bound, before the service starts anything: a
misconfigured API or a busy port refuses the start with one line naming the setting."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import secrets
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from runtime import redact
from runtime.config import ApiConfig
from runtime.errors import ConfigError
from runtime.service.api.passwords import PasswordHash, parse_hash

log = logging.getLogger("sluiceway.runtime.api")

SHORT_TOKEN = 16  # a shorter token is accepted with a warning
TOKEN_SUFFIX = ".api-token"  # the generated token's file: <db>.api-token


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """What the server needs from ``[api]``, checked.

    :ivar host: the host to bind, without brackets (``::1``, ``127.0.0.1``, ``localhost``)
    :ivar port: the port (0 picks a free one: tests)
    :ivar token: the bearer token; ``None`` only with ``auth = "none"``
    :ivar public_url: where people reach the server (its host is accepted in ``Host``;
        ``https`` makes cookies Secure and adds HSTS)
    :ivar password: the dashboard's login password (its hash), if any
    :ivar session_ttl: how long a dashboard login lasts, in seconds
    :ivar token_file: where the token was generated (a loopback bind without a token)
    """

    host: str
    port: int
    token: str | None = field(repr=False)
    public_url: str | None = None
    password: PasswordHash | None = field(default=None, repr=False)
    session_ttl: float = 12 * 3600.0
    token_file: Path | None = None

    @property
    def https(self) -> bool:
        """Whether people reach the server over HTTPS (``public_url``)."""
        return self.public_url is not None and self.public_url.lower().startswith("https:")

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

    :raises ConfigError: no token without ``auth = "none"``, ``auth = "none"`` on a bind
        that is not a loopback address, a ``password_hash`` or ``public_url`` that is not one
    """
    if config.bind is None:
        return None
    host, port = split_bind(config.bind)
    public_url = _public_url(config.public_url)
    password = _password(config.password_hash)

    def settings(token: str | None) -> ApiSettings:
        return ApiSettings(host, port, token, public_url, password, config.session_ttl)

    if config.auth == "none":
        if not is_loopback(host):
            raise ConfigError(
                f'[api] auth = "none" serves without a token, which is only allowed on a '
                f"loopback bind (127.0.0.1, ::1, localhost), not [api] bind = {config.bind!r}"
            )
        return settings(None)
    if not config.token:
        raise ConfigError(
            f"[api] bind = {config.bind!r} needs a token: set [api] token or "
            'SLUICEWAY_API_TOKEN (or auth = "none" on a loopback bind)'
        )
    if len(config.token) < SHORT_TOKEN:
        log.warning("[api] token is shorter than %d characters: easy to guess", SHORT_TOKEN)
    return settings(config.token)


def _password(text: str | None) -> PasswordHash | None:
    if text is None:
        return None
    try:
        return parse_hash(text)
    except ValueError as exc:  # the value is never quoted: it is (almost) a secret
        raise ConfigError(f"[api] password_hash {exc}") from None


def _public_url(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        url = urlsplit(text)
        url.port  # noqa: B018 - raises ValueError for a port that is not one
    except ValueError as exc:
        raise ConfigError(f"[api] public_url = {text!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConfigError(
            f"[api] public_url = {text!r} must be an http(s) URL such as 'https://etl.example.com'"
        )
    return text.rstrip("/")


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


def open_listener(config: ApiConfig, db: Path | None = None) -> Listener | None:
    """:func:`api_settings` then :func:`listen`; ``None`` without ``[api] bind``. With *db*,
    a loopback bind without a token gets a generated one (:func:`with_generated_token`).

    :raises ConfigError: see both
    """
    token_file = None
    if db is not None:
        config, token_file = with_generated_token(config, db)
    settings = api_settings(config)
    if settings is None:
        return None
    if token_file is not None:
        settings = dataclasses.replace(settings, token_file=token_file)
    return listen(settings)


# --- the quick start's generated token ---


def token_file(db: Path) -> Path:
    """Where the generated token of the database *db* is kept."""
    return db.with_name(db.name + TOKEN_SUFFIX)


def with_generated_token(config: ApiConfig, db: Path) -> tuple[ApiConfig, Path | None]:
    """*config* with a generated token when it binds a loopback address with
    ``auth = "token"`` and no token; else *config* unchanged. Returns (config, the token's
    file or ``None``).

    :raises ConfigError: when the token file cannot be read or written, or others may read it
    """
    if config.bind is None or config.token or config.auth != "token":
        return config, None
    if not is_loopback(split_bind(config.bind)[0]):
        return config, None  # api_settings refuses it, naming [api] token
    path = token_file(db)
    token = _read(path) if path.exists() else _create(path)
    redact.register([token])
    log.warning(
        "api: [api] token is not set: using the generated token in %s (log in to the "
        "dashboard with its contents; set [api] token or SLUICEWAY_API_TOKEN to choose one)",
        path,
    )
    return dataclasses.replace(config, token=token), path


def _read(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{path}: the generated API token is readable by others "
                f"(mode {stat.filemode(mode)}): chmod 600 it, or delete it for a new one"
            )
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the generated API token: {exc}") from None
    if len(token) < SHORT_TOKEN:
        raise ConfigError(
            f"{path}: the generated API token is shorter than {SHORT_TOKEN} characters: "
            "delete the file for a new one"
        )
    return token


def _create(path: Path) -> str:
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write a generated API token: {exc}") from None
    return token
