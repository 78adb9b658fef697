"""Alert routes: which events go to which notifier destinations, as ``[[alerts]]`` in the
config and ``Flow(..., alerts=[...])`` say; and ``${VAR}`` in ``[notifiers.*]`` options.

Pure data and checks, no I/O: the config reads routes through :func:`parse_route`, a flow
through :func:`flow_routes`; the service's alert hub (``runtime.service.alerts``) applies them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from runtime.durations import parse_duration

__all__ = [
    "EVENTS",
    "RESOLVABLE",
    "SECRET_KEYS",
    "AlertRoute",
    "expand_env",
    "flow_routes",
    "parse_destination",
    "parse_route",
    "read_alert_tables",
]

EVENTS = (
    "run.started",
    "run.succeeded",
    "run.failed",
    "run.cancelled",
    "run.recovered",
    "task.failed",
    "task.retrying",
    "task.recovered",
    "sla.missed",
    "quality.failed",
    "service.started",
    "service.stopping",
    "trigger.error",
)
"""Every event name a route's ``on`` may list. ``run.recovered`` asks for a recovery message
(kind ``"recovery"``) when a flow succeeds after alerts; a route with a digest gets one
anyway."""

RESOLVABLE = frozenset(
    {"run.failed", "run.cancelled", "task.failed", "task.retrying", "sla.missed", "quality.failed"}
)
"""Events that a later success of the flow resolves (listed in a recovery's ``resolves``)."""

_DESTINATION = re.compile(r"^([A-Za-z0-9_.-]+):([A-Za-z0-9_.-]+)$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KEYS = ("on", "to", "flows", "digest")


@dataclass(frozen=True, slots=True)
class AlertRoute:
    """One route: events *on* of flows matching *flows* go to the destinations *to*.

    :ivar on: event names (:data:`EVENTS`)
    :ivar to: destinations ``"<plugin>:<name>"``, each a ``[notifiers.<plugin>.<name>]`` table
    :ivar flows: glob patterns of flow names (``fnmatch``, case-sensitive); all by default
    :ivar digest: seconds: alerts of one flow within this window go out as one digest
    :ivar where: where the route was written (config entry, or ``file:line`` of a flow)
    """

    on: tuple[str, ...]
    to: tuple[str, ...]
    flows: tuple[str, ...] = ("*",)
    digest: float | None = None
    where: str = ""

    def matches(self, event: str, flow: str | None) -> bool:
        """Whether an *event* of *flow* (``None``: the service's own) takes this route."""
        return event in self.on and self.covers(flow)

    def covers(self, flow: str | None) -> bool:
        """Whether the route applies to *flow* (``None``: the service's own events)."""
        if flow is None:
            return self.flows == ("*",)
        return any(fnmatchcase(flow, pattern) for pattern in self.flows)

    @property
    def recovers(self) -> bool:
        """A later success of the flow sends a recovery to this route's destinations."""
        return self.digest is not None or "run.recovered" in self.on


def parse_destination(text: Any) -> tuple[str, str]:
    """``"slack:data-team"`` as ``("slack", "data-team")``.

    :raises ValueError: when it is not ``<plugin>:<name>``
    """
    match = _DESTINATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"a destination is '<plugin>:<name>' such as 'slack:ops', not {text!r}")
    return match.group(1), match.group(2)


def _names(data: Mapping[str, Any], key: str, default: tuple[str, ...] | None) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        if default is None:
            raise ValueError(f"{key} is missing")
        return default
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{key} must be a non-empty list of strings, not {value!r}")
    if not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} must be a list of non-empty strings, not {value!r}")
    return tuple(value)


def parse_route(data: Any, where: str, *, flows: tuple[str, ...] | None = None) -> AlertRoute:
    """Check one route given as a table/dict and make it an :class:`AlertRoute`.

    :param flows: the flows it applies to when fixed (a flow's own route); then a ``flows``
        key is refused
    :raises ValueError: naming what is wrong (the caller prefixes *where*)
    """
    if isinstance(data, AlertRoute):
        data = {"on": data.on, "to": data.to, "flows": data.flows, "digest": data.digest}
        if flows is not None:
            data.pop("flows")
    if not isinstance(data, Mapping):
        raise ValueError(f"a route is a table with {', '.join(_KEYS)}, not {data!r}")
    unknown = [k for k in data if k not in _KEYS or (k == "flows" and flows is not None)]
    if unknown:
        allowed = [k for k in _KEYS if k != "flows" or flows is None]
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(allowed)})")
    on = _names(data, "on", None)
    bad = [name for name in on if name not in EVENTS]
    if bad:
        raise ValueError(f"unknown event {bad[0]!r} in on (known: {', '.join(EVENTS)})")
    to = _names(data, "to", None)
    for destination in to:
        parse_destination(destination)
    digest = data.get("digest")
    seconds = None if digest is None else parse_duration(digest, what="digest")
    if seconds is not None and seconds <= 0:
        raise ValueError(f"digest must be a positive duration, not {digest!r}")
    found = flows if flows is not None else _names(data, "flows", ("*",))
    return AlertRoute(on, to, found, seconds, where)


def flow_routes(flow: str, where: str, given: Iterable[Any]) -> tuple[list[AlertRoute], list[str]]:
    """The routes of ``Flow(name, alerts=[...])``, and their problems (each starting with
    *where*, the flow's ``file:line``)."""
    routes, problems = [], []
    if isinstance(given, Mapping | str) or not isinstance(given, Iterable):
        return [], [f"{where}: flow {flow!r}: alerts must be a list of routes, not {given!r}"]
    for number, data in enumerate(given, 1):
        try:
            routes.append(parse_route(data, f"{where}: flow {flow!r}", flows=(flow,)))
        except ValueError as exc:
            problems.append(f"{where}: flow {flow!r}: alerts[{number}]: {exc}")
    return routes, problems


def expand_env(value: Any, env: Mapping[str, str], where: str, found: list[str]) -> Any:
    """*value* with ``${VAR}`` replaced from *env* (strings, and inside lists and tables);
    each value read is appended to *found* (they are treated as secrets).

    :raises ValueError: naming *where* and the variable that is not set
    """
    if isinstance(value, str):

        def read(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ValueError(f"{where}: ${{{name}}} is not set in the environment")
            found.append(env[name])
            return env[name]

        return _VAR.sub(read, value)
    if isinstance(value, list):
        return [expand_env(v, env, where, found) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env, f"{where}.{k}", found) for k, v in value.items()}
    return value


def read_alert_tables(
    raw: Mapping[str, Any], file: str, env: Mapping[str, str]
) -> tuple[tuple[AlertRoute, ...], dict[str, dict[str, Any]], list[str], list[str]]:
    """The ``[[alerts]]`` routes and ``[notifiers.<plugin>.<name>]`` tables of config file
    *file* (*raw*: its two top-level values, when present): the routes, the destinations'
    options by ``"<plugin>:<name>"`` with ``${VAR}`` read from *env*, the values that
    came from the environment or are secret by name (to be masked), and the problems of
    destinations that cannot be used (a ``${VAR}`` not set: an error for the service and
    ``test-alert``, not for ``sluiceway runs`` in a shell without the secrets).

    A route naming a destination that has no table is refused here; whether the plugin
    exists and takes the options is checked when the service builds its routing.

    :raises ValueError: one message naming the entry (``[[alerts]] #2``, ``[notifiers.x.y]``)
    """
    notifiers: dict[str, dict[str, Any]] = {}
    secret: list[str] = []
    problems: list[str] = []
    tables = raw.get("notifiers", {})
    if not isinstance(tables, dict):
        raise ValueError(f"{file}: notifiers must be tables like [notifiers.slack.ops]")
    for plugin, named in tables.items():
        if not isinstance(named, dict) or not all(isinstance(v, dict) for v in named.values()):
            raise ValueError(
                f"{file}: [notifiers.{plugin}] must hold tables like [notifiers.{plugin}.<name>]"
            )
        for name, options in named.items():
            where = f"{file}: [notifiers.{plugin}.{name}]"
            parse_destination(f"{plugin}:{name}")
            try:
                notifiers[f"{plugin}:{name}"] = expand_env(options, env, where, secret)
            except ValueError as exc:  # the service refuses it; other commands need not care
                notifiers[f"{plugin}:{name}"] = options
                problems.append(str(exc))
    given = raw.get("alerts", [])
    if not isinstance(given, list):
        raise ValueError(f"{file}: alerts must be an array of tables like [[alerts]]")
    routes = []
    for number, data in enumerate(given, 1):
        where = f"{file}: [[alerts]] #{number}"
        try:
            route = parse_route(data, where)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        for destination in route.to:
            if destination not in notifiers:
                known = ", ".join(sorted(notifiers)) or "none"
                raise ValueError(
                    f"{where}: unknown destination {destination!r}: no"
                    f" [notifiers.{destination.replace(':', '.')}] table (configured: {known})"
                )
        routes.append(route)
    return tuple(routes), notifiers, [*secret, *_secret_values(notifiers)], problems


SECRET_KEYS = ("url", "secret", "password", "routing_key", "token")
"""Option names whose values are secret whatever the plugin (as ``Notifier.secrets``)."""


def _secret_values(notifiers: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return [str(o[k]) for o in notifiers.values() for k in SECRET_KEYS if o.get(k)]
