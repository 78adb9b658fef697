"""Attempts under hostile tasks, in process on real SQLite files and real threads: a ``def``
attempt abandoned by its timeout keeps its slots until its thread ends (and its retry waits
for it), an ``async`` attempt that kept its timeout from firing fails, ``Retry(delay=...)``
takes durations and refuses nonsense, and durations too long for datetimes are refused or,
in the SLA timer, survived."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Flow, Retry, Run
from runtime.define.result import RunResult
from runtime.define.retry import RetryPolicy
from runtime.engine.events import Event, TaskRetrying
from runtime.errors import RunNotFoundError
from runtime.scheduling.sla import run_sla_monitor
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from runtime.testing import BlockingClock, FakeClock
from tests.cli_helpers import SLUICEWAY, clean_env
from tests.conftest import MakeRunner
from tests.scheduling.test_sla import T0, Gate, Misses, at, held_flow, start_run
from tests.waiting import WAIT


def stored(db_path: Path, run_id: int) -> dict[str, Any] | None:
    if not db_path.exists():
        return None
    with closing(connect_reader(db_path)) as conn:
        try:
            run: dict[str, Any] = queries.get_run(conn, run_id)
        except RunNotFoundError:
            return None
        return run


def task_row(run: dict[str, Any], name: str) -> dict[str, Any]:
    """The stored row of task *name*; empty while its row is not committed yet."""
    rows = [t for t in run["tasks"] if t["name"] == name and "index" not in t]
    return rows[0] if rows else {}


# --- 1. Retry(delay=...) and durations ---


async def test_retry_delay_takes_a_duration_string(
    make_runner: MakeRunner, clock: FakeClock, events: list[Event]
) -> None:
    flow = Flow("asks")

    @flow.task(retries=1)
    async def asks(run: Run) -> int:
        if run.attempt == 1:
            raise Retry("not yet", delay="30s")
        return run.attempt

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["asks"] == 2
    assert clock.sleeps == [30.0]
    assert [e.delay for e in events if isinstance(e, TaskRetrying)] == [30.0]


@pytest.mark.parametrize(
    ("delay", "message"),
    [
        ("soon", "Retry delay 'soon' is not a duration (use seconds or e.g. '30s'"),
        (1e12, "Retry delay must be at most 366 days, not 1000000000000.0"),
        ("-5", "Retry delay must be a finite, non-negative duration, not '-5'"),
        ([30], "Retry delay must be seconds or a string like '30s', not [30]"),
    ],
)
async def test_a_retry_delay_that_is_not_a_duration_fails_the_task_at_once(
    make_runner: MakeRunner, db_path: Path, delay: Any, message: str
) -> None:
    flow = Flow("nonsense")

    @flow.task(retries=3)
    async def asks() -> None:
        raise Retry("not yet", delay=delay)

    async with make_runner() as runner:
        result = await runner.run(flow)
    task = result.tasks["asks"]
    assert (task.state, task.attempts) == (TaskState.FAILED, 1)
    assert task.error is not None
    assert task.error.startswith(f"ValueError: {message}")
    run = stored(db_path, result.id)
    assert run is not None
    assert 'raise Retry("not yet", delay=delay)' in task_row(run, "asks")["traceback"]


def test_backoff_past_what_a_float_holds_is_capped() -> None:
    policy = RetryPolicy(retries=5000, delay=1, backoff=2.0, max_delay=300)
    assert policy.delay_for(2000) == 300


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"retry_delay": "1e12"}, "retry_delay must be at most 366 days, not '1e12'"),
        ({"max_delay": 1e12}, "max_delay must be at most 366 days, not 1000000000000.0"),
        ({"timeout": "400d"}, "timeout must be at most 366 days, not '400d'"),
        ({"sla": 10**20}, "sla must be at most 366 days, not 100000000000000000000"),
    ],
)
def test_task_durations_past_a_year_are_validation_problems(
    options: dict[str, Any], problem: str
) -> None:
    flow = Flow("long")

    @flow.task(**options)
    def a() -> None:
        pass

    (found,) = flow.problems()
    assert found.endswith(f": task 'a': {problem}")


def test_a_flow_sla_past_a_year_is_a_validation_problem() -> None:
    flow = Flow("long", sla=1e12)
    assert any(
        p.endswith("sla must be at most 366 days, not 1000000000000.0") for p in flow.problems()
    )


async def test_an_sla_past_the_year_9999_is_not_watched_and_the_monitor_goes_on(
    make_runner: MakeRunner,
) -> None:
    clock = BlockingClock(T0)
    gate = Gate()
    huge = held_flow(gate, sla=60, task_sla=60)
    huge.sla = huge.tasks["hold"].sla = 1e12  # set past validation: the timer must survive it
    prompt = Flow("prompt", sla=60)

    @prompt.task
    async def hold() -> str:
        await gate.release.wait()
        return "done"

    misses = Misses()
    flows = {"late": huge, "prompt": prompt}
    async with make_runner(clock=clock) as runner, anyio.create_task_group() as tg:
        runner.bus.subscribe(misses)
        await tg.start(run_sla_monitor, runner.bus, runner.store, clock, flows.get)
        with anyio.fail_after(WAIT):
            gate.release.set()
            first = await runner.run(huge)
        assert first.state is RunState.SUCCEEDED
        gate.release = anyio.Event()
        second = start_run(tg, runner, prompt)  # the same monitor still watches
        with anyio.fail_after(WAIT):
            await clock.wait_for_sleeps(at(60))  # only the prompt run's deadline is armed
            clock.advance(61)
            await misses.wait(1)
        gate.release.set()
        assert (await second.wait()).state is RunState.SUCCEEDED
        tg.cancel_scope.cancel()
    assert [(m.run_id, m.flow, m.scope) for m in misses.seen] == [(2, "prompt", "flow")]


# --- 5. a def attempt abandoned by its timeout ---


async def wait_stored(
    db_path: Path, run_id: int, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """Poll the stored run until *check* holds (the writer commits within its interval)."""
    deadline = anyio.current_time() + WAIT
    while True:
        run = stored(db_path, run_id)
        if run is not None and check(run):
            return run
        assert anyio.current_time() < deadline, f"timed out waiting for {what}: {run}"
        await anyio.sleep(0.02)


class Background:
    """A run going on in a task group; :attr:`result` once it ended."""

    def __init__(self) -> None:
        self.result: RunResult | None = None

    def start(self, tg: anyio.abc.TaskGroup, go: Callable[[], Any]) -> None:
        async def run() -> None:
            self.result = await go()

        tg.start_soon(run)


async def test_a_timed_out_def_attempt_keeps_its_slots_until_its_thread_ends(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("lingering")
    release = threading.Event()
    order: list[str] = []

    @flow.task(pool="single", timeout=0.05)
    def stuck() -> None:
        release.wait(20)
        order.append("stuck's thread ended")

    @flow.task(pool="single", after=[stuck], run_if="all_done")
    def next_in_pool() -> None:
        order.append("next_in_pool started")

    run = Background()
    try:
        async with make_runner() as runner:
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    run.start(tg, lambda: runner.run(flow))
                    seen = await wait_stored(
                        db_path, 1, lambda r: task_row(r, "stuck").get("state") == "failed", "stuck"
                    )
                    waiting = task_row(seen, "next_in_pool")
                    assert (waiting["state"], waiting["reason"]) == (
                        "pending",
                        "waiting for a slot: pool single is full",
                    )
                    assert runner.limits.pools["single"].used == 1  # the thread still has it
                    assert order == []
                    release.set()
            assert runner.limits.pools["single"].used == 0
            assert runner.limits.global_slots.used == 0
    finally:
        release.set()
    assert order == ["stuck's thread ended", "next_in_pool started"]
    assert run.result is not None
    assert run.result.tasks["stuck"].error == "TaskTimeoutError: attempt 1 timed out after 0.05s"
    assert run.result.tasks["next_in_pool"].state is TaskState.SUCCEEDED


@pytest.mark.slow
async def test_a_retry_waits_for_the_timed_out_attempts_thread_and_show_says_so(
    make_runner: MakeRunner, db_path: Path, tmp_path: Path
) -> None:
    flow = Flow("one-at-a-time")
    release = threading.Event()
    order: list[str] = []

    @flow.task(timeout=0.05, retries=1, retry_delay=0)
    def flaky(run: Run) -> int:
        if run.attempt == 1:
            release.wait(20)
            order.append("attempt 1's thread ended")
            return 1
        order.append("attempt 2 started")
        return 2

    reason = "waiting for the timed-out attempt 1's thread to end"
    run = Background()
    try:
        async with make_runner() as runner:
            with anyio.fail_after(WAIT):
                async with anyio.create_task_group() as tg:
                    run.start(tg, lambda: runner.run(flow))
                    seen = await wait_stored(
                        db_path, 1, lambda r: task_row(r, "flaky").get("reason") == reason, reason
                    )
                    assert task_row(seen, "flaky")["state"] == "retrying"
                    show = await anyio.run_process(
                        [*SLUICEWAY, "show", "1", "--db", str(db_path)],
                        cwd=tmp_path,
                        env=clean_env(),
                    )
                    line = next(
                        line for line in show.stdout.decode().splitlines() if "flaky" in line
                    )
                    assert "retrying" in line
                    assert f"{reason}: TaskTimeoutError: attempt 1 timed out" in line
                    assert order == []
                    release.set()
    finally:
        release.set()
    assert order == ["attempt 1's thread ended", "attempt 2 started"]
    assert run.result is not None
    assert run.result["flaky"] == 2
    assert run.result.tasks["flaky"].attempts == 2


# --- 6. an async attempt that kept its timeout from firing ---


async def test_an_async_task_blocking_the_loop_past_its_timeout_fails(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("blocks")

    @flow.task(timeout=0.1, retries=1, retry_delay=0, retry_on=(TimeoutError,))
    async def blocks(run: Run) -> int:
        if run.attempt == 1:
            time.sleep(0.5)  # noqa: ASYNC251 - the fault under test
        return run.attempt

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["blocks"] == 2  # the first attempt was never succeeded
    with closing(connect_reader(db_path)) as conn:
        first, second = queries.get_attempts(conn, result.id)
    assert (first["state"], first["error_type"]) == ("failed", "TaskTimeoutError")
    message = first["error_message"]
    ran = re.match(r"attempt 1 ran (\d+\.\d\d)s, past its timeout of 0\.1s: it blocked ", message)
    assert ran, message
    assert float(ran[1]) >= 0.5  # it slept 0.5 s (longer on a loaded machine)
    assert "it blocked the event loop" in message
    assert second["state"] == "succeeded"


async def test_an_async_task_that_swallows_its_timeout_fails(make_runner: MakeRunner) -> None:
    flow = Flow("stubborn")

    @flow.task(timeout=0.05)
    async def stubborn() -> str:
        try:
            await anyio.sleep(10)
        except anyio.get_cancelled_exc_class():
            time.sleep(0.3)  # noqa: ASYNC251 - goes on after the timeout's cancel
        return "late"

    async with make_runner() as runner:
        result = await runner.run(flow)
    task = result.tasks["stubborn"]
    assert task.state is TaskState.FAILED
    assert task.error is not None
    ran = re.match(r"TaskTimeoutError: attempt 1 ran (\d+\.\d\d)s", task.error)
    assert ran, task.error
    assert float(ran[1]) >= 0.3  # it slept 0.3 s after the cancel (longer on a loaded machine)
    assert "it caught the timeout's cancellation and went on" in task.error
