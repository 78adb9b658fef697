"""Data-quality checks: ``run.check`` in a task and ``@flow.check(after=...)`` functions;
recorded per attempt, ``quality.failed`` for failures, ``severity="error"`` fails the task."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from runtime import Flow, Run
from runtime.engine.events import CheckFailed, Event
from runtime.errors import FlowValidationError
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from tests.conftest import MakeRunner


def stored_run(db_path: Path, run_id: int) -> dict[str, Any]:
    with closing(connect_reader(db_path)) as conn:
        return queries.get_run(conn, run_id)


def brief(checks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["task"], c["name"], c["passed"], c["severity"], c["detail"]) for c in checks]


async def test_run_check_records_checks_and_a_warning_does_not_fail(
    make_runner: MakeRunner, db_path: Path, events: list[Event]
) -> None:
    flow = Flow("orders")

    @flow.task
    async def load(run: Run) -> int:
        n = 0
        assert run.check("row_count", n > 0, detail=f"{n} rows", severity="warn") is False
        assert run.check("schema", True) is True
        return n

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    run = stored_run(db_path, result.id)
    assert brief(run["checks"]) == [
        ("load", "row_count", False, "warn", "0 rows"),
        ("load", "schema", True, "error", None),
    ]
    (failed,) = [e for e in run["events"] if e["kind"] == "quality.failed"]
    assert failed == {
        "ts": failed["ts"],
        "kind": "quality.failed",
        "task": "load",
        "check": "row_count",
        "detail": "0 rows",
        "severity": "warn",
        "attempt": 1,
    }
    (published,) = [e for e in events if isinstance(e, CheckFailed)]
    assert (published.task, published.check, published.severity) == ("load", "row_count", "warn")


async def test_a_failed_error_check_fails_the_task_after_it_returns(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("orders")
    reached = []

    @flow.task
    async def load(run: Run) -> int:
        run.check("row_count", False, detail="0 rows")
        run.check("nulls", False, detail="3 null ids")
        reached.append("end")  # the task goes on: every check is recorded
        return 0

    @flow.task
    async def publish(load: int) -> None:
        pass

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert reached == ["end"]
    assert result.state is RunState.FAILED
    assert result.tasks["load"].state is TaskState.FAILED
    assert result.tasks["load"].error == (
        "QualityCheckError: failed checks: row_count (0 rows); nulls (3 null ids)"
    )
    assert result.tasks["publish"].state is TaskState.UPSTREAM_FAILED
    assert len(stored_run(db_path, result.id)["checks"]) == 2


async def test_flow_checks_judge_a_tasks_result(make_runner: MakeRunner, db_path: Path) -> None:
    flow = Flow("orders")

    @flow.task
    async def load() -> list[int]:
        return [1, 2, 0]

    @flow.check(after="load")
    def not_empty(rows: list[int]) -> bool:
        return bool(rows)

    @flow.check(after=load, severity="warn")
    async def no_zeros(rows: list[int]) -> tuple[bool, str]:
        zeros = rows.count(0)
        return zeros == 0, f"{zeros} zero row(s)"

    @flow.check(after="load", severity="warn", name="junk")
    def returns_junk(rows: list[int]) -> Any:
        return "yes"

    @flow.check(after="load", severity="warn")
    def explodes(rows: list[int]) -> bool:
        raise KeyError("region")

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED  # only warnings failed
    assert brief(stored_run(db_path, result.id)["checks"]) == [
        ("load", "not_empty", True, "error", None),
        ("load", "no_zeros", False, "warn", "1 zero row(s)"),
        ("load", "junk", False, "warn", "the check returned str, not a bool or (bool, detail)"),
        ("load", "explodes", False, "warn", "the check raised KeyError: 'region'"),
    ]


async def test_a_failing_error_check_is_retried_with_the_task(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("orders")

    @flow.task(retries=1, retry_delay=0)
    async def load(run: Run) -> int:
        return run.attempt  # the data is there on the second try

    @flow.check(after="load")
    def arrived(n: int) -> tuple[bool, str]:
        return n > 1, f"attempt {n}"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["load"].state is TaskState.SUCCEEDED
    assert result.tasks["load"].attempts == 2
    checks = stored_run(db_path, result.id)["checks"]
    assert [(c["attempt"], c["passed"]) for c in checks] == [(1, False), (2, True)]


async def test_checks_from_a_def_task_thread_and_on_mapped_instances(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("orders")

    @flow.task
    def days() -> list[int]:
        return [1, 2]

    @flow.task(map="days")
    def load(days: int, run: Run) -> int:
        time.sleep(0.01)  # in its worker thread
        run.check("positive", days > 0, detail=f"day {days}")
        return days

    @flow.check(after="load", severity="warn")
    def even(n: int) -> bool:
        return n % 2 == 0

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    checks = stored_run(db_path, result.id)["checks"]
    seen = sorted((c["index"], c["name"], c["passed"]) for c in checks)
    assert seen == [
        (0, "even", False),
        (0, "positive", True),
        (1, "even", True),
        (1, "positive", True),
    ]


async def test_a_bad_run_check_call_fails_the_attempt_with_a_clear_error(
    make_runner: MakeRunner,
) -> None:
    flow = Flow("orders")

    @flow.task
    async def load(run: Run) -> None:
        run.check("row count", True, severity="fatal")

    async with make_runner() as runner:
        result = await runner.run(flow)
    error = result.tasks["load"].error
    assert error is not None
    assert error.startswith("ValueError: run.check: check name must be letters")
    assert "severity must be 'error' or 'warn', not 'fatal'" in error


def test_bad_flow_checks_are_problems_with_file_and_line() -> None:
    flow = Flow("orders")

    @flow.task
    async def load() -> int:
        return 1

    @flow.check(after="lod")
    def typo(n: int) -> bool:
        return True

    @flow.check(after="load", severity="fatal")  # type: ignore[arg-type]
    def severe(n: int) -> bool:
        return True

    @flow.check(after="load", name="severe", severity="warn")
    def again(n: int) -> bool:
        return True

    with pytest.raises(FlowValidationError) as info:
        flow.validate()
    here = "tests/engine/test_quality.py"
    problems = info.value.problems
    assert any(
        p.startswith(f"{here}:") and "check 'typo': after='lod' is not a task of the flow" in p
        for p in problems
    )
    assert any(
        "check 'severe': severity must be 'error' or 'warn', not 'fatal'" in p for p in problems
    )
    assert any("task 'load' already has a check of that name" in p for p in problems)
