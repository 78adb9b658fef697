"""Task: one function of a flow and how to run it; its signature declares its dependencies."""

from __future__ import annotations

import functools
import inspect
import linecache
import os
import re
from collections.abc import Callable, Iterable
from inspect import CO_VARARGS, CO_VARKEYWORDS
from types import CodeType, FunctionType
from typing import TYPE_CHECKING, Any

from runtime import codec
from runtime.define.retry import RetryPolicy
from runtime.durations import parse_duration

if TYPE_CHECKING:
    from runtime.define.flow import Flow

RUN_PARAM = "run"
RULES = ("all_succeeded", "all_done", "any_failed", "all_failed", "none_failed", "any_succeeded")
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_DEF = re.compile(r"^\s*(async\s+)?def\s")


class Branch:
    """Return ``Branch("a", "b")`` from a task to run only those of its direct downstream
    tasks; the others end ``skipped`` with the reason "not chosen by <task>"."""

    __slots__ = ("names",)

    def __init__(self, *names: str | Callable[..., Any]) -> None:
        self.names = tuple(_task_name(n) for n in names)

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


def _task_name(ref: object) -> str:
    if isinstance(ref, str):
        return ref
    if isinstance(ref, Task):
        return ref.name
    return str(getattr(ref, "__name__", ref))


class Task:
    """One task of a flow: a function plus how to run it. Calling it calls the function."""

    def __init__(
        self,
        flow: Flow,
        func: Callable[..., Any],
        *,
        name: str | None,
        retries: int,
        retry_delay: float | str,
        backoff: float,
        max_delay: float | str,
        jitter: bool,
        retry_on: type[BaseException] | Iterable[type[BaseException]],
        timeout: float | str | None,
        pool: str | None,
        after: Iterable[object],
        run_if: str,
        map: str | None,
        max_concurrency: int | None,
        sla: float | str | None = None,
        on_crash: str = "retry",
    ) -> None:
        self.flow = flow
        self.func = func
        self.name = name or func.__name__
        code = getattr(func, "__code__", None)
        self.where = location(code.co_filename, _def_line(code)) if code else flow.where
        self.is_async = inspect.iscoroutinefunction(func)
        # each problem is prefixed with "file:line: task 'name': " by Flow.problems
        self.problems: list[str] = []
        problem = self.problems.append
        if not isinstance(self.name, str) or not NAME_PATTERN.match(self.name):
            problem(f"name must be letters, digits, '_', '.', '-', not {self.name!r}")
        elif self.name == RUN_PARAM:
            problem("'run' is reserved for the run context and cannot name a task")
        if isinstance(after, str) or callable(after):
            after = (after,)  # after="load" means one task, not the letters of its name
        try:
            self.after = tuple(_task_name(a) for a in after)
        except TypeError:
            problem(f"after must be a list of tasks or task names, not {after!r}")
            self.after = ()
        self.pool = pool
        self.run_if = run_if
        self.map = map
        self.max_concurrency = max_concurrency
        self.on_crash = on_crash
        self.sla: float | None = None
        if sla is not None:
            try:
                self.sla = parse_duration(sla, what="sla")
            except ValueError as exc:
                self.problems.append(str(exc))
        if on_crash not in ("retry", "fail"):
            self.problems.append(f"on_crash must be 'retry' or 'fail', not {on_crash!r}")
        self.timeout: float | None = None
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            problem(f"retries must be a whole number >= 0, not {retries!r}")
            retries = 0
        delays = {}
        for label, value in (("retry_delay", retry_delay), ("max_delay", max_delay)):
            try:
                delays[label] = parse_duration(value, what=label)
            except ValueError as exc:
                problem(str(exc))
                delays[label] = 0.0
        # "not >= 1" also rejects NaN
        if isinstance(backoff, bool) or not isinstance(backoff, int | float) or not backoff >= 1:
            problem(f"backoff must be a number >= 1, not {backoff!r}")
            backoff = 1.0
        if not isinstance(jitter, bool):
            problem(f"jitter must be True or False, not {jitter!r}")
            jitter = False
        kinds: tuple[object, ...]
        if isinstance(retry_on, type | str):
            kinds = (retry_on,)  # a str is one bad value, not a list of letters
        else:
            try:
                kinds = tuple(retry_on)
            except TypeError:
                kinds = (retry_on,)
        errors = tuple(k for k in kinds if isinstance(k, type) and issubclass(k, BaseException))
        if len(errors) != len(kinds) or not errors:
            bad = [k for k in kinds if k not in errors]
            problem(f"retry_on must be exception classes, not {bad or retry_on!r}")
            errors = (Exception,)
        self.retry = RetryPolicy(
            retries=retries,
            delay=delays["retry_delay"],
            backoff=float(backoff),
            max_delay=delays["max_delay"],
            jitter=jitter,
            retry_on=errors,
        )
        if timeout is not None:
            try:
                self.timeout = parse_duration(timeout, what="timeout")
            except ValueError as exc:
                problem(str(exc))
            else:
                if self.timeout == 0:
                    problem("timeout must be longer than 0 seconds")
        if pool is not None and (not isinstance(pool, str) or not NAME_PATTERN.match(pool)):
            problem(f"pool must be a name like 'warehouse', not {pool!r}")
        if run_if not in RULES:
            problem(f"unknown run_if {run_if!r} (one of: {', '.join(RULES)})")
        if max_concurrency is not None and (
            not isinstance(max_concurrency, int)
            or isinstance(max_concurrency, bool)
            or max_concurrency < 1
        ):
            problem(f"max_concurrency must be a whole number >= 1, not {max_concurrency!r}")
            self.max_concurrency = None
        if not callable(func):
            problem(f"{func!r} is not a function")
            self.params: tuple[str, ...] = ()
        else:
            self.params = self._read_signature(func)
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
