"""Retries with backoff, jitter and retry_on; per-attempt timeouts; retry of a whole run."""

from __future__ import annotations

import threading
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Flow, Retry, Run
from runtime.engine.events import Event, TaskRetrying
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from runtime.testing import BlockingClock, FakeClock
from tests.conftest import MakeRunner
from tests.waiting import WAIT


def stored_run(db_path: Path, run_id: int) -> dict[str, Any]:
    with closing(connect_reader(db_path)) as conn:
        return queries.get_run(conn, run_id)


def stored_attempts(db_path: Path, run_id: int) -> list[dict[str, Any]]:
    with closing(connect_reader(db_path)) as conn:
        return queries.get_attempts(conn, run_id)


async def test_exponential_backoff_with_a_cap(make_runner: MakeRunner, clock: FakeClock) -> None:
    flow = Flow("backoff")
    calls: list[int] = []

    @flow.task(retries=3, retry_delay=2, backoff=2, max_delay=5)
    async def flaky(run: Run) -> str:
        calls.append(run.attempt)
        raise ConnectionError("refused")

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert clock.sleeps == [2, 4, 5]
    assert calls == [1, 2, 3, 4]
    task = result.tasks["flaky"]
    assert task.state is TaskState.FAILED
    assert task.attempts == 4
    assert task.error == "ConnectionError: refused"


async def test_retry_then_success(make_runner: MakeRunner, clock: FakeClock) -> None:
    flow = Flow("recovering")

    @flow.task(retries=5, retry_delay="30s")
    async def flaky(run: Run) -> int:
        if run.attempt < 3:
            raise ConnectionError("not yet")
        return run.attempt

    @flow.task
    async def after(flaky: int) -> int:
        return flaky * 10

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    assert result["after"] == 30
    assert result.tasks["flaky"].attempts == 3
    assert clock.sleeps == [30, 60]


async def test_jitter_stays_within_zero_and_the_base(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    flow = Flow("jitter")

    @flow.task(retries=8, retry_delay=1, backoff=2, max_delay=16, jitter=True)
    async def flaky() -> None:
        raise ConnectionError("refused")

    async with make_runner() as runner:
        await runner.run(flow)
    bases = [1, 2, 4, 8, 16, 16, 16, 16]
    assert len(clock.sleeps) == len(bases)
    assert all(0 <= got <= base for got, base in zip(clock.sleeps, bases, strict=True))
    assert clock.sleeps != bases  # drawn, not the base itself


async def test_retry_on_limits_which_errors_retry(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    flow = Flow("retry-on")

    @flow.task(retries=3, retry_on=(ConnectionError,))
    async def wrong_kind() -> None:
        raise KeyError("id")

    @flow.task(retries=2, retry_delay=1, retry_on=ConnectionError)
    async def right_kind() -> None:
        raise ConnectionResetError("reset")  # a subclass is covered too

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["wrong_kind"].state is TaskState.FAILED
    assert result.tasks["wrong_kind"].attempts == 1
    assert result.tasks["wrong_kind"].error == "KeyError: 'id'"
    assert result.tasks["right_kind"].attempts == 3
    assert clock.sleeps == [1, 2]


async def test_raise_retry_with_its_own_delay(
    make_runner: MakeRunner, clock: FakeClock, events: list[Event]
) -> None:
    flow = Flow("retry-request")

    @flow.task(retries=2, retry_delay=100, retry_on=(ConnectionError,))
    async def poll(run: Run) -> str:
        if run.attempt == 1:
            raise Retry("file not there yet", delay=7)
        return "found"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["poll"] == "found"
    assert clock.sleeps == [7]
    (retrying,) = [e for e in events if isinstance(e, TaskRetrying)]
    assert (retrying.task, retrying.attempt, retrying.delay) == ("poll", 1, 7)
    assert retrying.error == "Retry: file not there yet"


async def test_retry_without_retries_left_fails(make_runner: MakeRunner) -> None:
    flow = Flow("retry-exhausted")

    @flow.task
    async def poll() -> None:
        raise Retry("still missing")

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["poll"].state is TaskState.FAILED
    assert result.tasks["poll"].error == "Retry: still missing"


async def test_retrying_state_is_stored_with_the_next_attempt_time(
    make_runner: MakeRunner, db_path: Path
) -> None:
    clock = BlockingClock()
    flow = Flow("retrying", params={})

    @flow.task(retries=1, retry_delay=90, pool="warehouse")
    async def flaky(run: Run) -> str:
        if run.attempt == 1:
            raise ConnectionError("refused")
        return "ok"

    async with make_runner(clock=clock) as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                outcome: dict[str, Any] = {}

                async def run() -> None:
                    outcome["result"] = await runner.run(flow)

                tg.start_soon(run)
                await clock.wait_sleeping()
                # no slot is held while waiting for the next attempt
                assert runner.limits.global_slots.used == 0
                assert runner.limits.pools["warehouse"].used == 0
                await runner.store.flush()
                (listed,) = await runner.store.read(queries.list_runs, flow.name)
                stored = await runner.store.read(queries.get_run, listed["id"])
                clock.advance(90)
    (task,) = stored["tasks"]
    assert stored["state"] == "running"
    assert task["state"] == "retrying"
    assert task["attempts"] == 1
    failed_at = datetime(2026, 1, 1, tzinfo=UTC)
    assert task["next_attempt_at"] == (failed_at + timedelta(seconds=90)).isoformat().replace(
        "+00:00", "Z"
    )
    assert task["error"] == "ConnectionError: refused"
    assert outcome["result"]["flaky"] == "ok"
    final = await anyio.to_thread.run_sync(stored_run, db_path, outcome["result"].id)
    assert final["tasks"][0]["state"] == "succeeded"
    assert final["tasks"][0]["next_attempt_at"] is None


async def test_attempt_rows_keep_each_error(make_runner: MakeRunner, db_path: Path) -> None:
    flow = Flow("attempt-rows")

    def parse(run: Run) -> None:
        raise ValueError(f"bad input on try {run.attempt}")

    @flow.task(retries=2, retry_delay=1)
    async def flaky(run: Run) -> str:
        if run.attempt == 1:
            raise ConnectionError("refused")
        if run.attempt == 2:
            parse(run)
        return "done"

    async with make_runner() as runner:
        result = await runner.run(flow)
    attempts = await anyio.to_thread.run_sync(stored_attempts, db_path, result.id)
    rows = [(a["attempt"], a["state"], a["error_type"], a["error_message"]) for a in attempts]
    assert rows == [
        (1, "failed", "ConnectionError", "refused"),
        (2, "failed", "ValueError", "bad input on try 2"),
        (3, "succeeded", None, None),
    ]
    assert all(a["started_at"] and a["ended_at"] for a in attempts)
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    assert stored["tasks"][0]["attempts"] == 3


async def test_attempt_traceback_starts_at_the_task(make_runner: MakeRunner, db_path: Path) -> None:
    flow = Flow("traceback")

    def parse(row: str) -> int:
        return int(row)

    @flow.task
    async def load() -> int:
        return parse("seven")

    async with make_runner() as runner:
        result = await runner.run(flow)
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    (task,) = stored["tasks"]
    assert task["error"] == "ValueError: invalid literal for int() with base 10: 'seven'"
    assert task["error_type"] == "ValueError"
    tb = task["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert "in load" in tb
    assert "in parse" in tb
    assert "runtime/engine.py" not in tb  # the engine's frames are noise to a flow author
    assert tb.endswith("ValueError: invalid literal for int() with base 10: 'seven'")


# --- timeouts ---


async def test_timeout_is_a_failed_attempt_retried_under_timeout_error(
    make_runner: MakeRunner, db_path: Path, clock: FakeClock
) -> None:
    flow = Flow("timeouts")

    @flow.task(timeout=0.05, retries=2, retry_delay=1, retry_on=(TimeoutError,))
    async def hangs() -> None:
        await anyio.Event().wait()

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    task = result.tasks["hangs"]
    assert task.state is TaskState.FAILED
    assert task.attempts == 3
    assert task.error == "TaskTimeoutError: attempt 3 timed out after 0.05s"
    assert clock.sleeps == [1, 2]
    attempts = await anyio.to_thread.run_sync(stored_attempts, db_path, result.id)
    assert [(a["state"], a["error_type"]) for a in attempts] == [("failed", "TaskTimeoutError")] * 3


async def test_timeout_not_in_retry_on_fails_at_once(make_runner: MakeRunner) -> None:
    flow = Flow("timeout-no-retry")

    @flow.task(timeout="50ms", retries=3, retry_on=(ConnectionError,))
    async def hangs() -> None:
        await anyio.Event().wait()

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert result.tasks["hangs"].attempts == 1
    assert result.tasks["hangs"].state is TaskState.FAILED


async def test_def_task_that_times_out(make_runner: MakeRunner) -> None:
    flow = Flow("def-timeout")
    let_go = threading.Event()
    thread_done = threading.Event()

    @flow.task(timeout=0.05)
    def blocks() -> None:
        try:
            let_go.wait(5)
        finally:
            thread_done.set()

    @flow.task(run_if="all_done")
    async def report(blocks: None) -> str:
        return "reported"

    try:
        async with make_runner() as runner:
            with anyio.fail_after(WAIT):
                result = await runner.run(flow)
    finally:
        let_go.set()
    assert result.tasks["blocks"].state is TaskState.FAILED
    assert result.tasks["blocks"].error == "TaskTimeoutError: attempt 1 timed out after 0.05s"
    assert result["report"] == "reported"
    assert result.state is RunState.FAILED
    await anyio.to_thread.run_sync(thread_done.wait, 5)


async def test_timeout_applies_per_attempt(make_runner: MakeRunner) -> None:
    flow = Flow("timeout-per-attempt")

    @flow.task(timeout=0.05, retries=1, retry_delay=0)
    async def slow_first(run: Run) -> int:
        if run.attempt == 1:
            await anyio.Event().wait()
        return run.attempt

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert result["slow_first"] == 2


# --- retry of a whole run ---


def counting_flow(name: str, calls: dict[str, int], broken: set[str]) -> Flow:
    flow = Flow(name, params={"day": "mon"})

    def count(task: str) -> None:
        calls[task] = calls.get(task, 0) + 1
        if task in broken:
            raise RuntimeError(f"{task} broke")

    @flow.task
    async def extract(day: str) -> list[int]:
        count("extract")
        return [1, 2, 3]

    @flow.task
    async def transform(extract: list[int]) -> list[int]:
        count("transform")
        return [x * 10 for x in extract]

    @flow.task
    async def load(transform: list[int]) -> int:
        count("load")
        return sum(transform)

    @flow.task
    async def side(day: str) -> str:
        count("side")
        return day

    @flow.task(run_if="all_done")
    async def report(load: int, side: str) -> str:
        count("report")
        return f"{side}:{load}"

    return flow


async def test_retry_reruns_failed_tasks_and_reuses_the_others(
    make_runner: MakeRunner, db_path: Path
) -> None:
    calls: dict[str, int] = {}
    broken = {"transform"}
    flow = counting_flow("rerun", calls, broken)
    async with make_runner() as runner:
        first = await runner.run(flow, {"day": "tue"})
        assert first.state is RunState.FAILED
        assert first.tasks["load"].state is TaskState.UPSTREAM_FAILED
        broken.clear()
        second = await runner.retry(flow, first.id)
    assert second.state is RunState.SUCCEEDED
    assert second.id != first.id
    assert second["report"] == "tue:60"
    # extract and side ran once: their stored results were reused
    assert calls == {"extract": 1, "side": 1, "transform": 2, "load": 1, "report": 2}
    stored = await anyio.to_thread.run_sync(stored_run, db_path, second.id)
    assert stored["retry_of"] == first.id
    assert stored["trigger"] == {"kind": "retry", "run_id": first.id}
    assert stored["params"] == {"day": "tue"}
    old = await anyio.to_thread.run_sync(stored_run, db_path, first.id)
    assert stored["logical_date"] == old["logical_date"]
    assert old["state"] == "failed"  # the first run's history is kept as it was
    by_name = {t["name"]: t for t in stored["tasks"]}
    assert by_name["extract"]["state"] == "succeeded"
    assert by_name["extract"]["attempts"] == 0  # reused, not run
    assert by_name["transform"]["attempts"] == 1


async def test_retry_of_a_cancelled_run(make_runner: MakeRunner) -> None:
    from runtime.engine.handle import RunHandle

    calls: dict[str, int] = {}
    flow = Flow("rerun-cancelled")
    started = anyio.Event()
    hold = {"on": True}

    @flow.task
    async def first() -> int:
        calls["first"] = calls.get("first", 0) + 1
        return 1

    @flow.task
    async def second(first: int) -> int:
        calls["second"] = calls.get("second", 0) + 1
        started.set()
        if hold["on"]:
            await anyio.Event().wait()
        return first + 1

    handle = RunHandle()
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                results: list[Any] = []

                async def run() -> None:
                    results.append(await runner.run(flow, handle=handle))

                tg.start_soon(run)
                await started.wait()
                handle.cancel()
            assert results[0].state is RunState.CANCELLED
            hold["on"] = False
            again = await runner.retry(flow, results[0].id)
    assert again.state is RunState.SUCCEEDED
    assert again["second"] == 2
    assert calls == {"first": 1, "second": 2}


@pytest.mark.parametrize("state", ["running", "succeeded"])
async def test_retry_refuses_runs_that_are_not_retryable(
    make_runner: MakeRunner, state: str
) -> None:
    from runtime.errors import SluicewayError

    flow = Flow("not-retryable")

    @flow.task
    async def only() -> int:
        return 1

    async with make_runner() as runner:
        done = await runner.run(flow)
        run_id = done.id
        if state == "running":
            run_id, _ = await runner.store.create_run(
                flow=flow.name,
                params={},
                trigger={"kind": "manual"},
                logical_date=datetime(2026, 1, 1, tzinfo=UTC),
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        with pytest.raises(SluicewayError, match=f"run {run_id}"):
            await runner.retry(flow, run_id)


async def test_retry_keeps_a_branch_decision(make_runner: MakeRunner) -> None:
    from runtime import Branch

    flow = Flow("rerun-branch")
    calls: dict[str, int] = {}
    broken = {"full"}

    def count(task: str) -> None:
        calls[task] = calls.get(task, 0) + 1
        if task in broken:
            raise RuntimeError(f"{task} broke")

    @flow.task
    async def choose() -> Branch:
        count("choose")
        return Branch("full")

    @flow.task(after=[choose])
    async def full() -> str:
        count("full")
        return "full"

    @flow.task(after=[choose])
    async def incremental() -> str:
        count("incremental")
        return "incremental"

    async with make_runner() as runner:
        first = await runner.run(flow)
        assert first.tasks["incremental"].state is TaskState.SKIPPED
        broken.clear()
        second = await runner.retry(flow, first.id)
    assert second.state is RunState.SUCCEEDED
    assert calls == {"choose": 1, "full": 2}
    assert second.tasks["incremental"].state is TaskState.SKIPPED
    assert second.tasks["incremental"].reason == "not chosen by choose"
