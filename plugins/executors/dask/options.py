"""``[executors.dask]``: the options, their defaults and checks (no Dask import here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runtime.durations import parse_duration

KEYS = ("address", "local", "connect_timeout", "heartbeat")
LOCAL_KEYS = {"workers": 2, "threads_per_worker": 1, "processes": True}


@dataclass(frozen=True, slots=True)
class DaskOptions:
    """The checked options.

    :ivar address: the scheduler of an existing cluster (``tcp://scheduler:8786``)
    :ivar local: a ``LocalCluster`` the service starts and stops itself (one machine, tests):
        ``workers``, ``threads_per_worker``, ``processes``
    :ivar connect_timeout: longest a connection (or a reconnection) to the scheduler may take
    :ivar heartbeat: the client's heartbeat interval to the scheduler
    """

    address: str | None
    local: Mapping[str, Any] | None
    connect_timeout: float
    heartbeat: float


def problems(options: Mapping[str, Any]) -> list[str]:
    """What is wrong with *options*, one sentence each naming the option."""
    found = [f"unknown option {k!r} (options: {', '.join(KEYS)})" for k in options if k not in KEYS]
    address, local = options.get("address"), options.get("local")
    if (address is None) == (local is None):
        found.append("give exactly one of address = 'tcp://host:8786' or local = { workers = 2 }")
    if address is not None and (not isinstance(address, str) or "://" not in address):
        found.append(f"address must be a scheduler address like 'tcp://host:8786', not {address!r}")
    if local is not None:
        found.extend(_local_problems(local))
    for key in ("connect_timeout", "heartbeat"):
        if key in options:
            try:
                parse_duration(options[key], what=key)
            except ValueError as exc:
                found.append(str(exc))
    return found


def _local_problems(local: Any) -> list[str]:
    if not isinstance(local, Mapping):
        return [f"local must be a table like {{ workers = 2 }}, not {local!r}"]
    found = [
        f"unknown local option {k!r} (options: {', '.join(LOCAL_KEYS)})"
        for k in local
        if k not in LOCAL_KEYS
    ]
    for key in ("workers", "threads_per_worker"):
        value = local.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            found.append(f"local.{key} must be a whole number >= 1, not {value!r}")
    if not isinstance(local.get("processes", True), bool):
        found.append(f"local.processes must be true or false, not {local['processes']!r}")
    return found


def read(options: Mapping[str, Any]) -> DaskOptions:
    """The checked *options* with their defaults (call :func:`problems` first)."""
    local = options.get("local")
    return DaskOptions(
        address=options.get("address"),
        local=None if local is None else {**LOCAL_KEYS, **local},
        connect_timeout=parse_duration(options.get("connect_timeout", "10s"), what="x"),
        heartbeat=parse_duration(options.get("heartbeat", "5s"), what="x"),
    )
