"""The values of sluiceway.toml: the checks each key's value passes, and the tables with fixed
keys ([api], [files], [history]). :mod:`runtime.config` reads the file and the environment."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.durations import parse_duration


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """``[api]``: the service's HTTP server (event triggers, the JSON API, the dashboard, metrics).

    :ivar bind: ``host:port`` to listen on; ``None`` (the default) starts no server
    :ivar token: the bearer token every route but the health checks asks for
        (``SLUICEWAY_API_TOKEN``); never shown in messages
    :ivar auth: ``"token"``, or ``"none"`` to serve without auth (only on a loopback bind)
    :ivar public_url: the URL people reach the API at, for links in alerts
    :ivar password_hash: a hash of the dashboard's login password (people may log in with
        the token or this password); never shown
    :ivar session_ttl: how long a dashboard login lasts
    """

    bind: str | None = None
    token: str | None = field(default=None, repr=False)
    auth: str = "token"
    public_url: str | None = None
    password_hash: str | None = field(default=None, repr=False)
    session_ttl: float = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """``[files]``: how file triggers watch their folders.

    :ivar rescan: every this long each watched folder is scanned in full and reconciled with
        the claims (the watcher is only a hint: inotify drops events under load)
    :ivar poll: scan every ``poll_interval`` instead of using inotify, for every file trigger
        (NFS, some containers)
    :ivar poll_interval: how often a polling trigger scans
    """

    rescan: float = 60.0
    poll: bool = False
    poll_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class HistoryConfig:
    """``[history]``: how long the run history is kept.

    :ivar retention: runs that ended longer ago than this are deleted with their tasks,
        attempts, log lines and events; ``None`` (the default) keeps everything
    :ivar prune_interval: how often the service prunes
    """

    retention: float | None = None
    prune_interval: float = 3600.0


def positive_int(value: Any) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"must be a whole number >= 1, not {value!r}")
    return value


def log_level(value: Any) -> str:
    text = str(value).upper()
    if text not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError(f"must be DEBUG, INFO, WARNING or ERROR, not {value!r}")
    return text


def flush_interval(value: Any) -> float:
    seconds = parse_duration(value, what="value")
    if seconds > 5:
        raise ValueError(f"must be at most 5 seconds, not {value!r}")
    return seconds


def block_threshold(value: Any) -> float:
    seconds = parse_duration(value, what="value")
    if seconds != 0 and not 0.05 <= seconds <= 3600:
        raise ValueError(f"must be 0 (off) or between 50ms and 1h, not {value!r}")
    return seconds


def path_value(value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a path, not {value!r}")
    return Path(value)


def bind_address(value: Any) -> str:
    host, sep, port = str(value).rpartition(":")
    if not isinstance(value, str) or not sep or not host or not port.isdigit():
        raise ValueError(f"must be 'host:port' such as '127.0.0.1:8765', not {value!r}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"port must be 1-65535, not {port}")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("must be a non-empty string")
    return value


def choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(map(repr, choices))}, not {value!r}")
        return str(value)

    return check


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be true or false, not {value!r}")


def seconds_at_least(low: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        seconds = parse_duration(value, what="value")
        if seconds < low:
            raise ValueError(f"must be at least {low:g}s, not {value!r}")
        return seconds

    return check


# tables with fixed keys: [api], [files] and [history]; SLUICEWAY_API_TOKEN sets [api] token
TABLES: dict[str, tuple[type[Any], dict[str, Callable[[Any], Any]]]] = {
    "api": (
        ApiConfig,
        {
            "bind": bind_address,
            "token": text,
            "auth": choice("token", "none"),
            "public_url": text,
            "password_hash": text,
            "session_ttl": seconds_at_least(60.0),
        },
    ),
    "files": (
        FilesConfig,
        {"rescan": seconds_at_least(1.0), "poll": boolean, "poll_interval": seconds_at_least(0.05)},
    ),
    "history": (
        HistoryConfig,
        {"retention": seconds_at_least(60.0), "prune_interval": seconds_at_least(1.0)},
    ),
}
