"""Checks of a notifier's options shared by every notifier: unknown names, the endpoint URL,
the timeout, strings and tables. Each check returns sentences naming the option; none ever
repeats a secret value (a URL or a password is described, never shown)."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Mapping
from typing import Any

from yarl import URL

from runtime.durations import parse_duration
from runtime.errors import ConfigError

DEFAULT_TIMEOUT = 10.0
"""Seconds one delivery may take (the outbox applies its own budget around it as well)."""

MAX_TIMEOUT = 600.0


def unknown(options: Mapping[str, Any], known: Collection[str]) -> list[str]:
    """A sentence per option name not in *known*, with the closest known name."""
    problems = []
    for name in options:
        if name in known:
            continue
        close = difflib.get_close_matches(str(name), sorted(known), n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
        problems.append(f"unknown option {name!r} ({hint})")
    return problems


def url(
    options: Mapping[str, Any], key: str = "url", *, required: bool = True, example: str = ""
) -> list[str]:
    """Problems with the http(s) URL in ``options[key]`` (never showing the URL)."""
    value = options.get(key)
    if value is None or value == "":
        if not required:
            return []
        return [f"option {key!r} is required (the endpoint's URL{example})"]
    if not isinstance(value, str):
        return [f"option {key!r} must be a string, not {type(value).__name__}"]
    try:
        parsed = URL(value)
    except ValueError:
        return [f"option {key!r} is not a valid URL"]
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return [f"option {key!r} must be an http:// or https:// URL with a host"]
    return []


def host_of(value: str) -> str:
    """The host of URL *value* (what messages may name), or ``"the endpoint"``."""
    try:
        return URL(value).host or "the endpoint"
    except ValueError:
        return "the endpoint"


def timeout(options: Mapping[str, Any]) -> list[str]:
    """Problems with ``options["timeout"]`` (seconds or a duration such as ``"10s"``)."""
    if "timeout" not in options:
        return []
    try:
        seconds = parse_duration(options["timeout"], what="option 'timeout'", at_most=MAX_TIMEOUT)
    except ValueError as exc:
        return [str(exc)]
    return [] if seconds > 0 else ["option 'timeout' must be more than 0 seconds"]


def timeout_of(options: Mapping[str, Any]) -> float:
    """``options["timeout"]`` in seconds, :data:`DEFAULT_TIMEOUT` when absent."""
    if "timeout" not in options:
        return DEFAULT_TIMEOUT
    return parse_duration(options["timeout"], what="option 'timeout'", at_most=MAX_TIMEOUT)


def string(
    options: Mapping[str, Any], key: str, *, required: bool = False, secret: bool = False
) -> list[str]:
    """Problems with the string option *key* (*secret*: the value is never shown)."""
    value = options.get(key)
    if value is None:
        return [f"option {key!r} is required"] if required else []
    if not isinstance(value, str):
        shown = type(value).__name__ if secret else repr(value)
        return [f"option {key!r} must be a string, not {shown}"]
    if required and not value.strip():
        return [f"option {key!r} must not be empty"]
    return []


def boolean(options: Mapping[str, Any], key: str) -> list[str]:
    """Problems with the true/false option *key*."""
    value = options.get(key)
    if value is None or isinstance(value, bool):
        return []
    return [f"option {key!r} must be true or false, not {value!r}"]


def choice(options: Mapping[str, Any], key: str, allowed: Collection[str]) -> list[str]:
    """Problems with option *key*, which must be one of *allowed* when given."""
    value = options.get(key)
    if value is None or value in allowed:
        return []
    return [f"option {key!r} must be one of {', '.join(map(repr, allowed))}, not {value!r}"]


def headers(options: Mapping[str, Any], reserved: Collection[str] = ()) -> list[str]:
    """Problems with ``options["headers"]``: a table of header names to string values, none of
    them one the notifier sets itself (*reserved*, compared case-insensitively)."""
    value = options.get("headers")
    if value is None:
        return []
    if not isinstance(value, Mapping):
        return [f"option 'headers' must be a table of names to values, not {value!r}"]
    problems = []
    taken = {name.lower() for name in reserved}
    for name, item in value.items():
        if not isinstance(name, str) or not name or not name.isascii() or ":" in name:
            problems.append(f"option 'headers': {name!r} is not a header name")
        elif name.lower() in taken:
            problems.append(f"option 'headers': {name!r} is set by the notifier itself")
        elif not isinstance(item, str) or "\n" in item or "\r" in item:
            problems.append(f"option 'headers': the value of {name!r} must be a one-line string")
    return problems


def ensure(plugin: str, name: str, problems: list[str]) -> None:
    """Raise :class:`~runtime.errors.ConfigError` naming the notifier when *problems*."""
    if problems:
        raise ConfigError(f"notifier {plugin}:{name}: " + "; ".join(problems))


SECRET_HEADER_WORDS = ("auth", "token", "key", "secret", "password", "cookie", "signature")


def secret_header_values(options: Mapping[str, Any]) -> list[str]:
    """The values of ``options["headers"]`` whose names look like credentials
    (``Authorization``, ``X-Api-Key``, ``X-Auth-Token``, ...)."""
    table = options.get("headers")
    if not isinstance(table, Mapping):
        return []
    return [
        str(value)
        for name, value in table.items()
        if any(word in str(name).lower() for word in SECRET_HEADER_WORDS) and value
    ]
