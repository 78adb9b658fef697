"""Event trigger specs: ``files()``, ``on_event()``, ``on_flow()`` and the generic ``source()``.

Frozen data, checked when made, no I/O. A flow declares them; the service acts on them:
``on_event`` through its HTTP API and ``sluiceway emit``, ``on_flow`` when an upstream run
ends, and a :class:`SourceTrigger` through the trigger-source plugin it names (``files()`` is
the ``files`` plugin's). Each spec remembers the file and line it was written on.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from runtime.define.task import NAME_PATTERN, location
from runtime.registry import PluginError, trigger_source

__all__ = [
    "FLOW_STATES",
    "TASK_STATES",
    "EventTrigger",
    "FlowTrigger",
    "SourceTrigger",
    "files",
    "on_event",
    "on_flow",
    "source",
    "source_problems",
]

FLOW_STATES = ("succeeded", "failed", "cancelled")
"""The states ``on_flow(state=...)`` accepts for a whole run."""
TASK_STATES = ("succeeded", "failed", "skipped", "upstream_failed", "cancelled")
"""The states ``on_flow(task=..., state=...)`` accepts for one task."""


def _caller(depth: int) -> str:
    frame = sys._getframe(depth + 1)
    return location(frame.f_code.co_filename, frame.f_lineno)


def _show(value: Any) -> str:
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return repr(value)


@dataclass(frozen=True, slots=True)
class SourceTrigger:
    """A trigger served by a trigger-source plugin (``runtime.abc.TriggerSource``).

    :ivar plugin: the plugin's name, e.g. ``"files"``; an unknown name is a problem of the
        flow when it is loaded
    :ivar options: the options the plugin checks and reads
    :ivar where: ``file:line`` of the call in the flow file
    """

    plugin: str
    options: Mapping[str, Any]
    where: str = field(default="", compare=False)
    problems: tuple[str, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        args = [repr(self.options[k]) for k in ("folder",) if k in self.options]
        args += [f"{k}={_show(v)}" for k, v in sorted(self.options.items()) if k != "folder"]
        if self.plugin == "files":
            return f"files({', '.join(args)})"
        return f"source({', '.join([repr(self.plugin), *args])})"

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (``flows --json``)."""
        options = {k: _show(v) if isinstance(v, timedelta) else v for k, v in self.options.items()}
        return {"kind": self.plugin, **options}


def source(plugin: str, **options: Any) -> SourceTrigger:
    """A trigger served by the trigger-source plugin called *plugin* (installed through the
    entry-point group ``sluiceway.plugins``), with the plugin's *options*."""
    problems = []
    if not isinstance(plugin, str) or not plugin:
        problems.append(f"source() needs a plugin name, not {plugin!r}")
    return SourceTrigger(plugin, dict(options), _caller(1), tuple(problems))


def files(
    folder: str | os.PathLike[str],
    pattern: str = "*",
    *,
    recursive: bool = False,
    stable_for: float | str | timedelta = "2s",
    ignore: Iterable[str] = (),
    batch: float | str | timedelta | None = None,
    on_success: str | None = None,
    on_failure: str | None = None,
    poll: float | str | timedelta | None = None,
) -> SourceTrigger:
    """Start a run for every complete file that lands in *folder* (or one run per group of
    files with *batch*); the run sees it as ``run.trigger.path``, ``.size``, ``.mtime``.

    ``files("data/inbox", pattern="*.csv", stable_for="2s", on_success="move:data/done",
    on_failure="move:data/failed")``. Exactly once per file content: a claim keyed by (flow,
    path, size, mtime) is committed with its run; the same path rewritten triggers again.

    :param folder: the folder to watch; relative to the flow file's folder
    :param pattern: a glob on the file name (``*.csv``); ``recursive`` also matches below
    :param stable_for: a file is ready once its size and mtime have not changed for this
        long (a file renamed into the folder is ready at once)
    :param ignore: more name globs to ignore, besides hidden and temporary names (``.*``,
        ``*.tmp``, ``*.part``, ``*.crdownload``, ``*.swp``)
    :param batch: instead of a run per file, one run per group of files that become ready
        within this window (``run.trigger.paths``)
    :param on_success: ``"move:FOLDER"`` or ``"delete"`` or ``None`` (leave it) after a
        succeeded run; never overwrites (a suffix is added on a clash)
    :param on_failure: the same after a failed or cancelled run
    :param poll: scan every this long instead of using inotify (NFS, some containers);
        ``None`` watches with inotify and falls back to polling when watching fails
    """
    given = {
        "recursive": (recursive, False),
        "stable_for": (stable_for, "2s"),
        "ignore": (tuple(ignore) if isinstance(ignore, list | tuple) else ignore, ()),
        "batch": (batch, None),
        "on_success": (on_success, None),
        "on_failure": (on_failure, None),
        "poll": (poll, None),
    }
    if isinstance(folder, os.PathLike):
        folder = os.fspath(folder)  # files(Path("inbox")) is files("inbox"), key and all
    options: dict[str, Any] = {"folder": folder, "pattern": pattern}
    options.update((k, value) for k, (value, default) in given.items() if value != default)
    return SourceTrigger("files", options, _caller(1))


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Start a run whenever the event *name* is sent (``POST /api/events/NAME``,
    ``sluiceway emit NAME``); the event's JSON body is ``run.trigger.payload``."""

    name: str
    where: str = field(default="", compare=False)
    problems: tuple[str, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        return f"on_event({self.name!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "event", "name": self.name}


def on_event(name: str) -> EventTrigger:
    """Start a run of this flow whenever the event *name* arrives (see :class:`EventTrigger`).

    :param name: letters, digits, ``_ . -``
    """
    problems = []
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(
            f"on_event: event name must be letters, digits, '_', '.', '-', not {name!r}"
        )
    return EventTrigger(name, _caller(1), tuple(problems))


@dataclass(frozen=True, slots=True)
class FlowTrigger:
    """Start a run when a run of flow *flow* ends in one of *states* (or, with *task*, when
    that task of it does). Exactly once per upstream run, across restarts and reloads.

    :ivar flow: the upstream flow's name
    :ivar states: the states that start a run
    :ivar task: an upstream task's name, or ``None`` for the whole run
    """

    flow: str
    states: tuple[str, ...] = ("succeeded",)
    task: str | None = None
    where: str = field(default="", compare=False)
    problems: tuple[str, ...] = field(default=(), compare=False)

    def __str__(self) -> str:
        state = repr(self.states[0]) if len(self.states) == 1 else repr(list(self.states))
        task = f", task={self.task!r}" if self.task is not None else ""
        return f"on_flow({self.flow!r}, state={state}{task})"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "flow", "flow": self.flow, "state": list(self.states), "task": self.task}


def on_flow(
    flow: str, state: str | Iterable[str] = "succeeded", *, task: str | None = None
) -> FlowTrigger:
    """Start a run of this flow when a run of *flow* ends in *state* (a state or a list).

    ``on_flow("orders")`` runs after every succeeded ``orders`` run; ``on_flow("orders",
    state=["failed", "cancelled"])`` after the others; ``task="load"`` when that task of the
    upstream run ends in *state* instead of the whole run. The upstream run's id, logical
    date, state and params are in ``run.trigger``. A cycle of ``on_flow`` triggers is a
    problem of the flows it joins.
    """
    problems = []
    if isinstance(state, str):
        states: tuple[Any, ...] = (state,)
    elif isinstance(state, Iterable) and not isinstance(state, Mapping | bytes):
        states = tuple(state)
    else:  # None, 5: said below, not a TypeError at the flow file's import
        states = (state,)
    if not isinstance(flow, str) or not NAME_PATTERN.match(flow):
        problems.append(f"on_flow: flow name must be letters, digits, '_', '.', '-', not {flow!r}")
    allowed = FLOW_STATES if task is None else TASK_STATES
    bad = [s for s in states if not isinstance(s, str) or s not in allowed]
    if bad or not states:
        what = "a run" if task is None else "a task"
        problems.append(
            f"on_flow: state must be one or more of {', '.join(allowed)} (the end states of "
            f"{what}), not {bad or list(states)!r}"
        )
    if task is not None and (not isinstance(task, str) or not NAME_PATTERN.match(task)):
        problems.append(f"on_flow: task must be a task name, not {task!r}")
    if not bad:
        states = tuple(dict.fromkeys(states))  # in order, once each
    return FlowTrigger(flow, states, task, _caller(1), tuple(problems))


def source_problems(flow: str, where: str, specs: Iterable[SourceTrigger]) -> list[str]:
    """Plugin triggers of flow *flow* naming no installed trigger source, or options the
    plugin refuses; each problem starts with the trigger's ``file:line``."""
    found = []
    for spec in specs:
        if spec.problems:
            continue  # already said: no plugin name
        at = f"{spec.where or where}: flow {flow!r}: {spec}"
        try:
            plugin = trigger_source(spec.plugin)
        except PluginError as exc:
            found.append(f"{at}: {exc}")
            continue
        try:
            refused = list(plugin.check_options(spec.options))
        except Exception as exc:  # noqa: BLE001 - a plugin bug is its trigger's problem
            refused = [f"plugin {spec.plugin!r} failed checking the options: {exc!r}"]
        found.extend(f"{at}: {p}" for p in refused)
    return found
