"""A flow's own options checked (name, limits, params, executor), and which executor each of
its tasks runs on."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from runtime import codec
from runtime.define.options import NAME_PATTERN, RUN_PARAM, check_executor
from runtime.define.task import Task

LOCAL = "local"
"""The executor of the service's own loop and threads: always there, needs no config."""


def flow_option_problems(
    where: str,
    name: object,
    limits: Mapping[str, object],
    params: Mapping[Any, Any],
    executor: object,
) -> list[str]:
    """What is wrong with a flow's name, *limits* (``max_concurrency``, ...), params and
    ``executor=``, each prefixed with *where*."""
    problems = []
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"{where}: flow name must be letters, digits, '_', '.', '-', not {name!r}")
    for label, value in limits.items():
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            problems.append(
                f"{where}: flow {name!r}: {label} must be a whole number >= 1, not {value!r}"
            )
    bad = [k for k in params if not isinstance(k, str) or not k.isidentifier()]
    if bad:
        problems.append(f"{where}: flow {name!r}: param names must be identifiers, not {bad!r}")
    if RUN_PARAM in params:
        problems.append(f"{where}: flow {name!r}: 'run' is reserved and cannot be a param")
    for key, value in params.items():
        why = unstorable(value)
        if why is not None:
            problems.append(f"{where}: flow {name!r}: param {key!r}: {why}")
    problem = check_executor("executor", executor)[1]
    if problem is not None:
        problems.append(f"{where}: flow {name!r}: {problem}")
    return problems


def place_task(
    task: Task, flow_executor: str | None, executors: Collection[str] | None
) -> str | None:
    """Set ``task.remote`` to the executor plugin that runs *task* (``None``: local) and say
    what is wrong with it: an executor the config does not set up (when *executors*, the
    configured names, is given)."""
    name = task.executor or flow_executor or LOCAL
    task.remote = None if name == LOCAL else name
    if task.remote is None and task.resources:
        return (
            f"{task.where}: task {task.name!r}: resources= applies to a task run by an "
            f"executor that schedules by resources (executor='dask'), not to a local one"
        )
    if task.remote is None or executors is None or task.remote in executors:
        return None
    known = ", ".join(sorted({LOCAL, *executors}))
    return (
        f"{task.where}: task {task.name!r} uses executor {name!r}, which is not configured: "
        f"add an [executors.{name}] table to sluiceway.toml (available: {known})"
    )


def unstorable(value: Any) -> str | None:
    """Why a param value cannot be stored with its run (so that a retry or a resumed run
    would see a different value); ``None`` when it can."""
    try:
        codec.encode(value)
    except codec.NotSerializable as exc:
        return (
            f"{exc}; a param is stored with its run, so it must be a JSON value or a datetime, "
            "date, time, timedelta, tuple, set, Decimal, bytes, UUID or Path"
        )
    return None
