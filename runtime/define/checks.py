"""Data-quality checks: ``run.check(...)`` inside a task, and ``@flow.check(after="load")``
functions that judge a task's result.

A check has a name, passed or not, a detail for people, and a severity: a failed ``"error"``
check fails the task's attempt (after the task returned: every check of it is recorded
first), a failed ``"warn"`` check is only recorded and alerted on (``quality.failed``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from runtime.define.options import NAME_PATTERN, task_name
from runtime.define.task import location
from runtime.errors import SluicewayError

__all__ = [
    "CheckDef",
    "CheckResult",
    "QualityCheckError",
    "Severity",
    "check_problems",
    "flow_check_problems",
    "judge",
]

Severity = Literal["error", "warn"]
"""``"error"``: a failed check fails the task; ``"warn"``: it is only recorded and alerted."""
SEVERITIES: tuple[str, ...] = get_args(Severity)
DETAIL_MAX = 2000  # longer details are cut: a check's detail is a sentence, not a data dump


class QualityCheckError(SluicewayError):
    """A check with ``severity="error"`` failed: the attempt fails with this error."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome, as recorded and shown by ``show``."""

    name: str
    passed: bool
    detail: str | None
    severity: str


def check_problems(name: object, severity: object) -> list[str]:
    """What is wrong with a check's *name* and *severity*."""
    problems = []
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"check name must be letters, digits, '_', '.', '-', not {name!r}")
    if severity not in SEVERITIES:
        problems.append(f"severity must be 'error' or 'warn', not {severity!r}")
    return problems


def make_result(name: str, passed: object, detail: object, severity: str) -> CheckResult:
    """A :class:`CheckResult`, the detail made text and cut to :data:`DETAIL_MAX`."""
    text = None if detail is None else str(detail)
    if text is not None and len(text) > DETAIL_MAX:
        text = text[:DETAIL_MAX] + "…"
    return CheckResult(name, bool(passed), text, severity)


class CheckDef:
    """A check declared with ``@flow.check(after="load")``: called with the result of each
    succeeded attempt of ``load`` (of each instance, for a mapped task)."""

    __slots__ = ("after", "func", "is_async", "name", "problems", "severity", "where")

    def __init__(
        self, func: Callable[..., Any], after: object, severity: object, name: object
    ) -> None:
        self.func = func
        self.name = name if name is not None else getattr(func, "__name__", "check")
        self.severity = severity
        code = getattr(func, "__code__", None)
        self.where = location(code.co_filename, code.co_firstlineno) if code else "?"
        self.is_async = inspect.iscoroutinefunction(func)
        self.problems = check_problems(self.name, severity)
        try:
            self.after = task_name(after)
        except (TypeError, ValueError):
            self.after = ""
            self.problems.append(f"after must name a task of the flow, not {after!r}")
        if not callable(func):
            self.problems.append(f"a check must be a function, not {func!r}")

    def __repr__(self) -> str:
        return f"<check {self.name!r} after {self.after!r}>"


def judge(check: CheckDef, value: object) -> CheckResult:
    """Turn what a check function returned (a bool, or ``(bool, detail)``) into its result;
    anything else is a failed check that says what it got."""
    if isinstance(value, tuple) and len(value) == 2:
        passed, detail = value
        if isinstance(passed, bool):
            return make_result(str(check.name), passed, detail, str(check.severity))
    elif isinstance(value, bool):
        return make_result(str(check.name), value, None, str(check.severity))
    got = type(value).__name__
    return make_result(
        str(check.name),
        False,
        f"the check returned {got}, not a bool or (bool, detail)",
        str(check.severity),
    )


def raised(check: CheckDef, exc: BaseException) -> CheckResult:
    """The result of a check function that raised: failed, saying what it raised."""
    detail = f"the check raised {type(exc).__name__}: {exc}"
    return make_result(str(check.name), False, detail, str(check.severity))


def flow_check_problems(
    flow: str, checks: Mapping[str, Sequence[CheckDef]], tasks: Container[str]
) -> list[str]:
    """What is wrong with the ``@flow.check`` functions of flow *flow*."""
    found: list[str] = []
    for after, defs in checks.items():
        names = set()
        for check in defs:
            at = f"{check.where}: flow {flow!r}: check {check.name!r}"
            found.extend(f"{at}: {p}" for p in check.problems)
            if after and after not in tasks:
                found.append(f"{at}: after={after!r} is not a task of the flow")
            if check.name in names:
                found.append(f"{at}: task {after!r} already has a check of that name")
            names.add(check.name)
    return found
