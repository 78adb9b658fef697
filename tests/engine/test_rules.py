from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from runtime.define.flow import RULES
from runtime.define.retry import RetryPolicy
from runtime.engine.rules import (
    RUN,
    CallEnd,
    Ends,
    Verdict,
    attempt_outcome,
    decide,
    map_items,
    mapped_outcome,
    run_outcome,
)
from runtime.errors import Retry, Skip
from runtime.states import RunState, TaskState

S = TaskState

OK = TaskState.SUCCEEDED
FAIL = TaskState.FAILED
UPF = TaskState.UPSTREAM_FAILED
SKIP = TaskState.SKIPPED
CANC = TaskState.CANCELLED

RUNS = RUN

# rule, upstream end states, RUN or (the state the task ends in, part of the reason)
TABLE: list[tuple[str, list[TaskState], Verdict | tuple[TaskState, str]]] = [
    # all_succeeded: the default keeps upstream_failed; a skip spreads
    ("all_succeeded", [OK, OK], RUNS),
    ("all_succeeded", [OK, FAIL], (UPF, "an upstream task failed")),
    ("all_succeeded", [OK, UPF], (UPF, "an upstream task failed")),
    ("all_succeeded", [OK, SKIP], (SKIP, "an upstream task was skipped")),
    ("all_succeeded", [SKIP, SKIP], (SKIP, "an upstream task was skipped")),
    ("all_succeeded", [FAIL, SKIP], (UPF, "an upstream task failed")),
    ("all_succeeded", [OK, CANC], (CANC, "upstream cancelled")),
    ("all_succeeded", [FAIL, CANC], (CANC, "upstream cancelled")),
    # all_done: runs whatever the upstreams ended in
    ("all_done", [OK, OK], RUNS),
    ("all_done", [FAIL, UPF], RUNS),
    ("all_done", [SKIP, SKIP], RUNS),
    ("all_done", [OK, CANC], RUNS),
    ("all_done", [CANC], RUNS),
    # any_failed: the on-failure path
    ("any_failed", [OK, FAIL], RUNS),
    ("any_failed", [UPF], RUNS),
    ("any_failed", [FAIL, CANC], RUNS),
    ("any_failed", [OK, OK], (SKIP, "no upstream task failed")),
    ("any_failed", [SKIP, SKIP], (SKIP, "no upstream task failed")),
    ("any_failed", [OK, CANC], (CANC, "upstream cancelled")),
    # all_failed
    ("all_failed", [FAIL, FAIL], RUNS),
    ("all_failed", [FAIL, UPF], RUNS),
    ("all_failed", [FAIL, OK], (SKIP, "not every upstream task failed")),
    ("all_failed", [FAIL, SKIP], (SKIP, "not every upstream task failed")),
    ("all_failed", [SKIP], (SKIP, "not every upstream task failed")),
    ("all_failed", [FAIL, CANC], (CANC, "upstream cancelled")),
    # none_failed: upstreams succeeded or were skipped
    ("none_failed", [OK, OK], RUNS),
    ("none_failed", [OK, SKIP], RUNS),
    ("none_failed", [SKIP, SKIP], RUNS),
    ("none_failed", [OK, FAIL], (SKIP, "an upstream task failed")),
    ("none_failed", [SKIP, UPF], (SKIP, "an upstream task failed")),
    ("none_failed", [OK, CANC], (CANC, "upstream cancelled")),
    # any_succeeded
    ("any_succeeded", [OK, FAIL], RUNS),
    ("any_succeeded", [SKIP, OK], RUNS),
    ("any_succeeded", [FAIL, UPF], (SKIP, "no upstream task succeeded")),
    ("any_succeeded", [SKIP, SKIP], (SKIP, "no upstream task succeeded")),
    ("any_succeeded", [OK, CANC], (CANC, "upstream cancelled")),
]


@pytest.mark.parametrize(
    ("rule", "upstream", "expected"),
    TABLE,
    ids=[f"{rule}-{'+'.join(upstream)}" for rule, upstream, _ in TABLE],
)
def test_rule_decides_from_upstream_states(
    rule: str,
    upstream: list[TaskState],
    expected: Verdict | tuple[TaskState, str],
) -> None:
    verdict = decide(rule, upstream)
    if expected is RUN:
        assert verdict is RUN
    else:
        assert isinstance(verdict, Ends)
        want_state, want_reason = expected
        assert verdict.state is want_state
        assert want_reason in verdict.reason


def test_table_covers_every_rule() -> None:
    assert {rule for rule, _, _ in TABLE} == set(RULES)


def test_order_of_upstream_states_does_not_matter() -> None:
    assert decide("all_failed", [OK, FAIL]) == decide("all_failed", [FAIL, OK])
    assert decide("any_succeeded", [FAIL, OK]) == decide("any_succeeded", [OK, FAIL])


def test_unknown_rule_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown run_if 'sometimes'"):
        decide("sometimes", [OK])


# --- what an attempt comes to ---

POLICY = RetryPolicy(retries=2, delay=1.0, backoff=2.0)
STOP = asyncio.CancelledError()


def _end(
    *,
    result: object = None,
    error: BaseException | None = None,
    cancelled: bool = False,
    stopped: BaseException | None = None,
) -> CallEnd:
    return CallEnd(result, error, cancelled, stopped)


# how the call ended, attempt, cancelling, interrupting -> state, delay, part of the error
OUTCOMES: list[tuple[CallEnd, int, bool, bool, TaskState, float | None, str | None]] = [
    (_end(result=7), 1, False, False, S.SUCCEEDED, None, None),
    (_end(error=Skip("no file")), 1, False, False, S.SKIPPED, None, None),
    (_end(cancelled=True), 1, True, False, S.CANCELLED, None, None),
    (_end(stopped=STOP), 1, False, False, S.CANCELLED, None, None),
    (_end(stopped=STOP), 1, False, True, S.PENDING, None, "interrupted by service shutdown"),
    (_end(error=ValueError("no")), 1, False, False, S.RETRYING, 1.0, "no"),
    (_end(error=ValueError("no")), 2, False, False, S.RETRYING, 2.0, "no"),
    (_end(error=ValueError("no")), 3, False, False, S.FAILED, None, "no"),
    (_end(error=ValueError("no")), 1, True, False, S.FAILED, None, "no"),
    (_end(error=Retry("later", delay="30s")), 1, False, False, S.RETRYING, 30.0, "later"),
    (_end(error=Retry("later", delay="soon")), 1, False, False, S.FAILED, None, "soon"),
    (_end(error=SystemExit(3)), 1, False, False, S.FAILED, None, "3"),
    # the task caught the soft cancel and raised: its failure, not a cancel, and no retry
    (_end(error=KeyError("k"), cancelled=True), 1, True, False, S.FAILED, None, "k"),
]


@pytest.mark.parametrize(
    ("end", "attempt", "cancelling", "interrupting", "state", "delay", "error"),
    OUTCOMES,
    ids=[
        "returned",
        "skip",
        "soft-cancel",
        "stopped-from-outside",
        "stopped-for-shutdown",
        "failed-first-retry",
        "failed-backoff",
        "failed-no-tries-left",
        "failed-while-cancelling",
        "retry-with-delay",
        "retry-with-bad-delay",
        "system-exit",
        "raised-while-cancelled",
    ],
)
def test_attempt_outcome(
    end: CallEnd,
    attempt: int,
    cancelling: bool,
    interrupting: bool,
    state: TaskState,
    delay: float | None,
    error: str | None,
) -> None:
    outcome = attempt_outcome(
        end,
        attempt,
        POLICY,
        cancelling=cancelling,
        interrupting=interrupting,
        rng=random.Random(0),
    )
    assert (outcome.state, outcome.delay) == (state, delay)
    if error is None:
        assert outcome.error is None
    else:
        assert outcome.error is not None
        assert error in str(outcome.error)
    if state is S.SUCCEEDED:
        assert outcome.result == 7
    if state in (S.SKIPPED, S.CANCELLED):
        assert outcome.reason == ("no file" if state is S.SKIPPED else "run cancelled")


def test_a_bad_retry_delay_fails_with_a_value_error_that_keeps_the_tasks_traceback() -> None:
    try:
        raise Retry("later", delay="soon")
    except Retry as exc:
        raised = exc
    outcome = attempt_outcome(
        _end(error=raised), 1, POLICY, cancelling=False, interrupting=False, rng=random.Random(0)
    )
    assert isinstance(outcome.error, ValueError)
    assert outcome.error.__traceback__ is raised.__traceback__


# --- a mapped task's items and outcome, a run's outcome ---


def _numbers() -> Iterator[int]:
    yield 1
    raise OSError("disk gone")


@pytest.mark.parametrize(
    ("result", "items", "error"),
    [
        ([1, 2], [1, 2], None),
        ((x for x in "ab"), ["a", "b"], None),
        ([], [], None),
        (5, [], "map='parts': the result of 'parts' is a int, not a list or other iterable"),
        (None, [], "map='parts': the result of 'parts' is a NoneType, not a list"),
        (_numbers(), [], "iterating the result of 'parts' failed: OSError: disk gone"),
    ],
    ids=["list", "generator", "empty", "int", "none", "raising-generator"],
)
def test_map_items(result: object, items: list[object], error: str | None) -> None:
    got, problem = map_items(result, "parts", "parts")
    assert got == items
    if error is None:
        assert problem is None
    else:
        assert problem is not None
        assert error in problem


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([S.SUCCEEDED, S.SUCCEEDED], (S.SUCCEEDED, None, None)),
        ([S.SUCCEEDED, S.SKIPPED], (S.SUCCEEDED, None, None)),
        ([S.SKIPPED, S.SKIPPED], (S.SKIPPED, None, "every instance was skipped")),
        ([S.SUCCEEDED, S.CANCELLED], (S.CANCELLED, None, "run cancelled")),
        (
            [S.FAILED, S.CANCELLED, S.FAILED],
            (S.FAILED, "2 of 3 instances failed: x[0], x[2]", None),
        ),
    ],
    ids=["all-succeeded", "some-skipped", "all-skipped", "cancelled", "failed-wins"],
)
def test_mapped_outcome(
    states: list[TaskState], expected: tuple[TaskState, str | None, str | None]
) -> None:
    assert mapped_outcome(states, [f"x[{i}]" for i in range(len(states))]) == expected


def test_mapped_outcome_names_at_most_five_failed_instances() -> None:
    _, error, _ = mapped_outcome([S.FAILED] * 7, [f"x[{i}]" for i in range(7)])
    assert error == "7 of 7 instances failed: x[0], x[1], x[2], x[3], x[4], ..."


@pytest.mark.parametrize(
    ("cancelled", "states", "expected"),
    [
        (False, [S.SUCCEEDED, S.SKIPPED], RunState.SUCCEEDED),
        (False, [S.FAILED, S.SUCCEEDED], RunState.FAILED),  # a handler that ran after it
        (False, [S.UPSTREAM_FAILED, S.SKIPPED], RunState.FAILED),
        (True, [S.SUCCEEDED, S.CANCELLED], RunState.CANCELLED),
    ],
    ids=["skipped-branches", "handled-failure", "upstream-failed", "cancelled"],
)
def test_run_outcome(cancelled: bool, states: list[TaskState], expected: RunState) -> None:
    assert run_outcome(cancelled, states) is expected
