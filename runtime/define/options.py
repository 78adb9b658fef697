"""The options of ``@flow.task(...)``: their types, defaults and checks, from one table."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, get_args

from runtime.durations import parse_duration

__all__ = [
    "NAME_PATTERN",
    "ON_CRASH",
    "OPTIONS",
    "RULES",
    "RUN_PARAM",
    "OnCrash",
    "RunIf",
    "TaskOptions",
    "check_executor",
    "check_options",
    "task_name",
    "unknown_options",
]

RunIf = Literal[
    "all_succeeded", "all_done", "any_failed", "all_failed", "none_failed", "any_succeeded"
]
"""A trigger rule: when a task runs, given the end states of its upstream tasks."""
OnCrash = Literal["retry", "fail"]
"""What an attempt interrupted by a crash or restart of the service counts as."""

RULES: tuple[RunIf, ...] = get_args(RunIf)
ON_CRASH: tuple[OnCrash, ...] = get_args(OnCrash)
RUN_PARAM = "run"
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


class TaskOptions(TypedDict, total=False):
    """The keyword options of ``@flow.task(...)``, all optional.

    :ivar name: task name (default: the function's name)
    :ivar retries: extra attempts after a failure
    :ivar retry_delay: delay before the first retry (seconds or "30s")
    :ivar backoff: factor applied to the delay after each failed attempt
    :ivar max_delay: cap on the delay
    :ivar jitter: draw each delay uniformly from [0, delay] ("full jitter")
    :ivar retry_on: exception classes that are retried; others fail at once
    :ivar timeout: limit on one attempt; a timeout is a failed attempt (retried when
        ``retry_on`` covers ``TimeoutError``)
    :ivar pool: named pool (sized in ``[pools]`` of the config) this task takes a slot of
    :ivar after: tasks (functions or names) to wait for without taking their results
    :ivar run_if: trigger rule: when to run given the upstream states
    :ivar map: name of an upstream task parameter: run once per item of its result
    :ivar max_concurrency: most instances of this (mapped) task running at once
    :ivar sla: longest this task may run (over all its attempts) before an ``sla.missed``
        event is recorded
    :ivar on_crash: ``"retry"`` (default): an attempt interrupted by a crash or restart of
        the service counts as a failed attempt and is retried per the policy; ``"fail"``:
        the task fails instead of running again
    :ivar executor: where the body runs: ``"local"`` (the service's own loop and threads,
        the default) or an executor plugin configured in ``[executors.<name>]`` of the config
        (``"dask"``); default: the flow's ``executor=``
    :ivar resources: abstract resources one attempt needs on a worker, e.g.
        ``{"MEM": 8e9, "GPU": 1}`` (Dask worker resources); only with an executor
    """

    name: str | None
    retries: int
    retry_delay: float | str
    backoff: float
    max_delay: float | str
    jitter: bool
    retry_on: type[BaseException] | Iterable[type[BaseException]]
    timeout: float | str | None
    pool: str | None
    after: Iterable[object]
    run_if: RunIf
    map: str | None
    max_concurrency: int | None
    sla: float | str | None
    on_crash: OnCrash
    executor: str | None
    resources: Mapping[str, float] | None


Checked = tuple[Any, str | None]
"""An option's value to keep (a safe fallback when it is wrong) and the problem, if any."""


@dataclass(frozen=True, slots=True)
class Option:
    """One task option: its default, and how its value is checked (given its name)."""

    default: Any
    check: Callable[[str, Any], Checked]


def task_name(ref: object) -> str:
    """The task name *ref* stands for: a name, a declared ``Task`` (known here by its ``name``
    and ``func``: this module is below ``task.py``), or a function."""
    if isinstance(ref, str):
        return ref
    name = getattr(ref, "name", None)
    if isinstance(name, str) and hasattr(ref, "func"):
        return name
    return str(getattr(ref, "__name__", ref))


def _as_given(label: str, value: Any) -> Checked:
    return value, None


def _name(label: str, value: Any) -> Checked:
    if not isinstance(value, str) or not NAME_PATTERN.match(value):
        return value, f"name must be letters, digits, '_', '.', '-', not {value!r}"
    if value == RUN_PARAM:
        return value, "'run' is reserved for the run context and cannot name a task"
    return value, None


def _resources(label: str, value: Any) -> Checked:
    if value is None:
        return None, None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str)
        and k
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and v >= 0
        for k, v in value.items()
    ):
        return None, f"resources must map names to numbers >= 0, like {{'MEM': 8e9}}, not {value!r}"
    return {k: float(v) for k, v in value.items()}, None


def _whole(minimum: int, fallback: int | None) -> Callable[[str, Any], Checked]:
    """A whole number >= *minimum*; ``None`` is allowed (and the fallback) when *fallback* is."""

    def check(label: str, value: Any) -> Checked:
        if value is None and fallback is None:
            return None, None
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            return fallback, f"{label} must be a whole number >= {minimum}, not {value!r}"
        return value, None

    return check


def _duration(label: str, value: Any) -> Checked:
    try:
        return parse_duration(value, what=label), None
    except ValueError as exc:
        return 0.0, str(exc)


def _optional_duration(label: str, value: Any) -> Checked:
    if value is None:
        return None, None
    seconds, problem = _duration(label, value)
    return (None, problem) if problem else (seconds, None)


def _timeout(label: str, value: Any) -> Checked:
    seconds, problem = _optional_duration(label, value)
    if seconds == 0:
        return seconds, "timeout must be longer than 0 seconds"
    return seconds, problem


def _backoff(label: str, value: Any) -> Checked:
    # "not >= 1" also rejects NaN
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
        return 1.0, f"backoff must be a number >= 1, not {value!r}"
    return float(value), None


def _jitter(label: str, value: Any) -> Checked:
    if not isinstance(value, bool):
        return False, f"jitter must be True or False, not {value!r}"
    return value, None


def _retry_on(label: str, value: Any) -> Checked:
    kinds: tuple[object, ...]
    if isinstance(value, type | str):
        kinds = (value,)  # a str is one bad value, not a list of letters
    else:
        try:
            kinds = tuple(value)
        except TypeError:
            kinds = (value,)
    errors = tuple(k for k in kinds if isinstance(k, type) and issubclass(k, BaseException))
    if len(errors) != len(kinds) or not errors:
        bad = [k for k in kinds if k not in errors]
        return (Exception,), f"retry_on must be exception classes, not {bad or value!r}"
    return errors, None


def _pool(label: str, value: Any) -> Checked:
    if value is not None and (not isinstance(value, str) or not NAME_PATTERN.match(value)):
        return value, f"pool must be a name like 'warehouse', not {value!r}"
    return value, None


def check_executor(label: str, value: Any) -> Checked:
    """An executor's name (``None``: the flow's, or local); whether it is configured is
    checked with the flow (:meth:`runtime.define.flow.Flow.problems`)."""
    if value is not None and (not isinstance(value, str) or not NAME_PATTERN.match(value)):
        return None, f"executor must be a name like 'local' or 'dask', not {value!r}"
    return value, None


def _after(label: str, value: Any) -> Checked:
    if isinstance(value, str) or callable(value):
        value = (value,)  # after="load" means one task, not the letters of its name
    try:
        return tuple(task_name(a) for a in value), None
    except TypeError:
        return (), f"after must be a list of tasks or task names, not {value!r}"


def _run_if(label: str, value: Any) -> Checked:
    if value not in RULES:
        return value, f"unknown run_if {value!r} (one of: {', '.join(RULES)})"
    return value, None


def _on_crash(label: str, value: Any) -> Checked:
    if value not in ON_CRASH:
        return value, f"on_crash must be 'retry' or 'fail', not {value!r}"
    return value, None


# every option, in the order they are documented and listed in "unknown option" problems
OPTIONS: dict[str, Option] = {
    "name": Option(None, _name),
    "retries": Option(0, _whole(0, fallback=0)),
    "retry_delay": Option(1.0, _duration),
    "backoff": Option(2.0, _backoff),
    "max_delay": Option(300.0, _duration),
    "jitter": Option(False, _jitter),
    "retry_on": Option((Exception,), _retry_on),
    "timeout": Option(None, _timeout),
    "pool": Option(None, _pool),
    "after": Option((), _after),
    "run_if": Option("all_succeeded", _run_if),
    "map": Option(None, _as_given),
    "max_concurrency": Option(None, _whole(1, fallback=None)),
    "sla": Option(None, _optional_duration),
    "on_crash": Option("retry", _on_crash),
    "executor": Option(None, check_executor),
    "resources": Option(None, _resources),
}


# each default, checked once: most tasks give only a few options
_DEFAULTS: dict[str, Any] = {
    key: option.check(key, option.default)[0] for key, option in OPTIONS.items()
}


def check_options(given: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Every option's value (its default when not *given*) and the problems with them, in the
    order of :data:`OPTIONS`."""
    values = dict(_DEFAULTS)
    problems: list[str] = []
    for key, option in OPTIONS.items():
        if key in given:
            values[key], problem = option.check(key, given[key])
            if problem is not None:
                problems.append(problem)
    return values, problems


def unknown_options(given: Mapping[str, Any]) -> list[str]:
    """A problem for each name in *given* that is not an option, sorted."""
    return [
        f"unknown option {key!r} (options: {', '.join(OPTIONS)})"
        for key in sorted(set(given) - set(OPTIONS))
    ]
