"""Task: one function of a flow and how to run it; its signature declares its dependencies."""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import re
from collections.abc import Callable, Mapping
from inspect import CO_VARARGS, CO_VARKEYWORDS
from types import CodeType, FunctionType
from typing import Any, Protocol

from runtime import codec
from runtime.define.options import (
    NAME_PATTERN,
    RULES,
    RUN_PARAM,
    OnCrash,
    RunIf,
    TaskOptions,
    check_options,
    task_name,
    unknown_options,
)
from runtime.define.retry import RetryPolicy

__all__ = ["NAME_PATTERN", "RULES", "RUN_PARAM", "Branch", "Task", "TaskOptions", "location"]

_DEF = re.compile(r"^\s*(async\s+)?def\s")


class FlowRef(Protocol):
    """What a task knows of the flow that declares it (a ``Flow``, which is made of tasks:
    this module does not import it)."""

    @property
    def name(self) -> str: ...

    @property
    def where(self) -> str: ...


class Branch:
    """Return ``Branch("a", "b")`` from a task to run only those of its direct downstream
    tasks; the others end ``skipped`` with the reason "not chosen by <task>"."""

    __slots__ = ("names",)

    def __init__(self, *names: str | Callable[..., Any]) -> None:
        self.names = tuple(task_name(n) for n in names)

    def __repr__(self) -> str:
        return f"Branch({', '.join(map(repr, self.names))})"


# a task may return a Branch, so results store it: {"__sluiceway__": "branch", "value": [names]}
codec.register("branch", Branch, lambda branch: list(branch.names), lambda names: Branch(*names))


def location(path: str, line: int) -> str:
    return f"{_shown_path(path)}:{line}"


@functools.lru_cache(maxsize=256)
def _shown_path(path: str) -> str:
    """*path* relative to the working directory when it is below it (once per file: a flow
    file of 10,000 tasks asked 10,000 times)."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        rel = path
    return path if rel.startswith("..") else rel


def _def_line(code: CodeType) -> int:
    """The line of the ``def``: a decorated function's code starts at its first decorator."""
    first = code.co_firstlineno
    if code.co_name == "<lambda>":
        return first
    lines = linecache.getlines(code.co_filename)
    for number in range(first, min(len(lines), first + 100) + 1):
        if _DEF.match(lines[number - 1]):
            return number
    return first


class Task:
    """One task of a flow: a function plus how to run it. Calling it calls the function.

    Made by ``@flow.task(**options)``: each wrong or unknown option is a problem, listed in
    :attr:`problems`, and a safe default is used in its place.
    """

    def __init__(self, flow: FlowRef, func: Callable[..., Any], options: Mapping[str, Any]) -> None:
        self.flow = flow
        self.func = func
        code = getattr(func, "__code__", None)
        self.where = location(code.co_filename, _def_line(code)) if code else flow.where
        self.is_async = inspect.iscoroutinefunction(func)
        values, problems = check_options({**options, "name": options.get("name") or func.__name__})
        # each problem is prefixed with "file:line: task 'name': " by Flow.problems
        self.problems: list[str] = problems
        self.name: str = values["name"]
        self.after: tuple[str, ...] = values["after"]
        self.pool: str | None = values["pool"]
        self.run_if: RunIf = values["run_if"]
        self.map: str | None = values["map"]
        self.max_concurrency: int | None = values["max_concurrency"]
        self.sla: float | None = values["sla"]
        self.on_crash: OnCrash = values["on_crash"]
        self.timeout: float | None = values["timeout"]
        self.executor: str | None = values["executor"]  # as given; None: the flow's
        # the executor plugin that runs the body, set by Flow.problems; None: local
        self.remote: str | None = None
        self.resources: dict[str, float] | None = values["resources"]
        self.retry = RetryPolicy(
            retries=values["retries"],
            delay=values["retry_delay"],
            backoff=values["backoff"],
            max_delay=values["max_delay"],
            jitter=values["jitter"],
            retry_on=values["retry_on"],
        )
        if not callable(func):
            self.problems.append(f"{func!r} is not a function")
            self.params: tuple[str, ...] = ()
        else:
            self.params = self._read_signature(func)
        self.problems.extend(unknown_options(options))
        # filled in by Flow.validate
        self.data_deps: tuple[str, ...] = ()
        self.flow_params: tuple[str, ...] = ()
        self.wants_run = False

    def _read_signature(self, func: Callable[..., Any]) -> tuple[str, ...]:
        code = getattr(func, "__code__", None)
        if (
            type(func) is FunctionType
            and code is not None
            and not code.co_flags & (CO_VARARGS | CO_VARKEYWORDS)
            and not code.co_posonlyargcount
            and not hasattr(func, "__wrapped__")
            and not hasattr(func, "__signature__")
        ):
            # a plain function: its parameter names are in its code (inspect.signature took
            # about a third of the time of defining a task)
            declared: tuple[str, ...] = code.co_varnames
            return declared[: code.co_argcount + code.co_kwonlyargcount]
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError) as exc:
            self.problems.append(f"cannot read its signature: {exc}")
            return ()
        names = []
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                stars = "*" if p.kind is p.VAR_POSITIONAL else "**"
                self.problems.append(
                    f"takes {stars}{p.name}; parameters must each be a task, a flow param, or 'run'"
                )
            elif p.kind is p.POSITIONAL_ONLY:
                self.problems.append(f"parameter {p.name!r} is positional-only")
            else:
                names.append(p.name)
        return tuple(names)

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every task this one waits for: data dependencies, then ``after=``."""
        return tuple(dict.fromkeys((*self.data_deps, *self.after)))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.flow.name}.{self.name}>"
