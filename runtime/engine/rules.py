"""Deciding, purely: trigger rules, what an attempt comes to, a mapped task's items and
outcome, a run's final state."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal, NamedTuple

from runtime.define.retry import RetryPolicy
from runtime.durations import parse_duration
from runtime.errors import InterruptedRunError, Retry, Skip
from runtime.states import FAILED_STATES, RunState, TaskState


class S:
    """The members of TaskState as plain class attributes, for the engine's hot paths:
    reading ``TaskState.X`` goes through ``EnumType.__getattr__`` on Python 3.11 (several
    times the cost of a plain attribute), and the engine reads a few per task."""

    PENDING: Final = TaskState.PENDING
    RUNNING: Final = TaskState.RUNNING
    RETRYING: Final = TaskState.RETRYING
    SUCCEEDED: Final = TaskState.SUCCEEDED
    FAILED: Final = TaskState.FAILED
    UPSTREAM_FAILED: Final = TaskState.UPSTREAM_FAILED
    SKIPPED: Final = TaskState.SKIPPED
    CANCELLED: Final = TaskState.CANCELLED


class Verdict(Enum):
    """:func:`decide`'s answer when the task runs (otherwise it answers :class:`Ends`)."""

    RUN = "run"


class Ends(NamedTuple):
    """A task that does not run: the state it ends in, and why."""

    state: TaskState
    reason: str


RUN: Final = Verdict.RUN


def decide(rule: str, upstream: Iterable[TaskState]) -> Ends | Literal[Verdict.RUN]:
    """Return :data:`RUN` when the task runs, or :class:`Ends` with the state it ends in and why.

    Called once every upstream has ended. A rule that can no longer be met ends the task
    ``skipped``, except ``all_succeeded`` (the default), which keeps ``upstream_failed`` when
    an upstream failed. A cancelled upstream cancels the task under every rule but
    ``all_done``, and ``any_failed`` once another upstream failed (the on-failure path runs).
    """
    total = failed = succeeded = skipped = cancelled = 0
    for state in upstream:  # one pass, no generators: called once per task of every run
        total += 1
        if state in FAILED_STATES:
            failed += 1
        elif state is S.SUCCEEDED:
            succeeded += 1
        elif state is S.SKIPPED:
            skipped += 1
        elif state is S.CANCELLED:
            cancelled += 1
    if rule == "all_done":
        return RUN
    if cancelled and rule != "any_failed":
        return Ends(S.CANCELLED, "upstream cancelled")
    if rule == "all_succeeded":
        if failed:
            return Ends(S.UPSTREAM_FAILED, "an upstream task failed")
        if skipped:
            return Ends(S.SKIPPED, "an upstream task was skipped")
        return RUN
    if rule == "any_failed":
        if failed:
            return RUN
        if cancelled:
            return Ends(S.CANCELLED, "upstream cancelled")
        return Ends(S.SKIPPED, "no upstream task failed")
    if rule == "all_failed":
        if failed == total:
            return RUN
        return Ends(S.SKIPPED, "not every upstream task failed")
    if rule == "none_failed":
        if failed:
            return Ends(S.SKIPPED, "an upstream task failed")
        return RUN
    if rule == "any_succeeded":
        if succeeded:
            return RUN
        return Ends(S.SKIPPED, "no upstream task succeeded")
    raise ValueError(f"unknown run_if {rule!r}")


@dataclass(slots=True)
class CallEnd:
    """How the call of one attempt ended.

    :ivar result: what the task returned
    :ivar error: what the task raised (a ``Skip`` included), or ``None``
    :ivar cancelled: the attempt's own scope caught a soft cancel of the run
    :ivar stopped: the cancellation that stopped the attempt from outside (its run cancelled
        hard or interrupted, the process stopping): raised again once the attempt is recorded
    """

    result: Any = None
    error: BaseException | None = None
    cancelled: bool = False
    stopped: BaseException | None = None


@dataclass(slots=True)
class Outcome:
    """What one attempt comes to.

    :ivar state: the unit's state after it: ``succeeded``, ``skipped``, ``cancelled``,
        ``failed``, ``retrying`` (``delay`` seconds until the next attempt), or ``pending``
        (interrupted: the attempt is recorded failed, and the task waits for the next start)
    :ivar error: the failure recorded with the attempt (``None`` exactly when it ended
        ``succeeded``, ``skipped`` or ``cancelled``)
    """

    state: TaskState
    result: Any = None
    error: BaseException | None = None
    reason: str | None = None
    delay: float | None = None


INTERRUPTED_BY_SHUTDOWN = "interrupted by service shutdown"


def attempt_outcome(
    end: CallEnd,
    attempt: int,
    policy: RetryPolicy,
    *,
    cancelling: bool,
    interrupting: bool,
    rng: random.Random,
) -> Outcome:
    """What attempt number *attempt* comes to, from how its call ended (:class:`CallEnd`).

    A failure is retried per *policy*, unless the run is *cancelling*; a ``Retry`` with a
    delay that is not a duration fails at once (a bug in the task, not a failure another
    attempt could mend). A stop from outside while *interrupting* leaves the task pending.
    """
    if end.stopped is not None:
        if interrupting:
            return Outcome(S.PENDING, error=InterruptedRunError(INTERRUPTED_BY_SHUTDOWN))
        return Outcome(S.CANCELLED, reason="run cancelled")
    error = end.error
    if isinstance(error, Skip):
        return Outcome(S.SKIPPED, reason=error.reason)
    if error is None:
        if end.cancelled:
            return Outcome(S.CANCELLED, reason="run cancelled")
        return Outcome(S.SUCCEEDED, end.result)
    delay: float | None = None
    if isinstance(error, Retry) and error.delay is not None:
        try:
            delay = parse_duration(error.delay, what="Retry delay")
        except ValueError as bad:
            return Outcome(S.FAILED, error=ValueError(str(bad)).with_traceback(error.__traceback__))
    if cancelling or not policy.should_retry(error, attempt):
        return Outcome(S.FAILED, error=error)
    if delay is None:
        delay = policy.delay_for(attempt, rng)
    return Outcome(S.RETRYING, error=error, delay=delay)


def map_items(result: Any, map_name: str, source: str) -> tuple[list[Any], str | None]:
    """The items a ``map=`` task runs over, or an error naming the map and its source."""
    try:
        items = iter(result)
    except TypeError:
        kind = type(result).__name__
        return [], (
            f"map={map_name!r}: the result of {source!r} is a {kind}, not a list or other iterable"
        )
    try:
        return list(items), None
    except Exception as exc:  # noqa: BLE001 - a generator's error is the mapped task's failure
        return [], (
            f"map={map_name!r}: iterating the result of {source!r} failed: "
            f"{type(exc).__name__}: {exc}"
        )


def mapped_outcome(
    states: Sequence[TaskState], labels: Sequence[str]
) -> tuple[TaskState, str | None, str | None]:
    """A mapped task's state once every instance ended, with its error or reason."""
    failed = [label for label, state in zip(labels, states, strict=True) if state is S.FAILED]
    if failed:
        shown = ", ".join(failed[:5]) + (", ..." if len(failed) > 5 else "")
        return S.FAILED, f"{len(failed)} of {len(states)} instances failed: {shown}", None
    if S.CANCELLED in states:
        return S.CANCELLED, None, "run cancelled"
    if all(state is S.SKIPPED for state in states):
        return S.SKIPPED, None, "every instance was skipped"
    return S.SUCCEEDED, None, None


def run_outcome(cancelled: bool, states: Iterable[TaskState]) -> RunState:
    """A run's final state: only the tasks that matter count (a failure handler that ran
    does not make a failed run succeed; skipped branches do not fail it)."""
    if cancelled:
        return RunState.CANCELLED
    if any(state in FAILED_STATES for state in states):
        return RunState.FAILED
    return RunState.SUCCEEDED
