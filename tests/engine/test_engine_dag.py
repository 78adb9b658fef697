"""The engine runs a DAG: results flow downstream, tasks start as soon as they are ready."""

from __future__ import annotations

import threading
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Flow, Run
from runtime.engine.events import Event, TaskEnded, TaskStarted
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from tests.conftest import MakeRunner
from tests.waiting import WAIT


def stored_run(db_path: Path, run_id: int) -> dict[str, Any]:
    with closing(connect_reader(db_path)) as conn:
        return queries.get_run(conn, run_id)


def stored_logs(db_path: Path, run_id: int, task: str | None = None) -> list[dict[str, Any]]:
    with closing(connect_reader(db_path)) as conn:
        return queries.get_logs(conn, run_id, task)


async def test_results_flow_to_downstream_params(make_runner: MakeRunner, db_path: Path) -> None:
    flow = Flow("etl", params={"region": "eu"})

    @flow.task
    async def extract(region: str) -> list[dict[str, Any]]:
        return [{"region": region, "amount": 3}, {"region": region, "amount": 4}]

    @flow.task
    async def clean(extract: list[dict[str, Any]]) -> list[int]:
        return [row["amount"] for row in extract]

    @flow.task
    async def total(clean: list[int], extract: list[dict[str, Any]]) -> dict[str, Any]:
        return {"sum": sum(clean), "regions": sorted({r["region"] for r in extract})}

    async with make_runner() as runner:
        result = await runner.run(flow, {"region": "us"})

    assert result.state is RunState.SUCCEEDED
    assert result["clean"] == [3, 4]
    assert result["total"] == {"sum": 7, "regions": ["us"]}
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    assert stored["state"] == "succeeded"
    assert stored["params"] == {"region": "us"}
    assert [(t["name"], t["state"]) for t in stored["tasks"]] == [
        ("extract", "succeeded"),
        ("clean", "succeeded"),
        ("total", "succeeded"),
    ]


async def test_slow_branch_does_not_delay_an_independent_chain(make_runner: MakeRunner) -> None:
    # `slow` only finishes once the end of the fast chain ran: run in waves, it never would
    flow = Flow("waves")
    chain_done = anyio.Event()

    @flow.task
    async def slow() -> str:
        await chain_done.wait()
        return "slow"

    @flow.task
    async def fast1() -> int:
        return 1

    @flow.task
    async def fast2(fast1: int) -> int:
        return fast1 + 1

    @flow.task
    async def fast3(fast2: int) -> int:
        chain_done.set()
        return fast2 + 1

    @flow.task
    async def join(slow: str, fast3: int) -> str:
        return f"{slow}-{fast3}"

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert result["join"] == "slow-3"


async def test_task_starts_when_its_last_upstream_finishes(
    make_runner: MakeRunner, events: list[Event]
) -> None:
    flow = Flow("join")
    release_b = anyio.Event()
    seen: list[str] = []

    @flow.task
    async def a() -> str:
        seen.append("a")
        return "a"

    @flow.task
    async def b(run: Run) -> str:
        await release_b.wait()
        seen.append("b")
        return "b"

    @flow.task
    async def watcher(a: str) -> None:
        # a has ended; b has not, so c must not have started yet
        seen.append("watcher")
        release_b.set()

    @flow.task
    async def c(a: str, b: str) -> str:
        seen.append("c")
        return a + b

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert result["c"] == "ab"
    assert seen == ["a", "watcher", "b", "c"]
    order = [(type(e).__name__, e.task) for e in events if isinstance(e, TaskStarted | TaskEnded)]
    assert order.index(("TaskEnded", "b")) < order.index(("TaskStarted", "c"))


async def test_after_orders_without_passing_data(make_runner: MakeRunner) -> None:
    flow = Flow("after")
    release_load = anyio.Event()
    seen: list[str] = []

    @flow.task
    async def load() -> int:
        await release_load.wait()
        seen.append("load")
        return 42

    @flow.task
    async def other() -> None:
        seen.append("other")
        release_load.set()

    @flow.task(after=[load])
    async def notify(run: Run) -> str:
        seen.append("notify")
        return "sent"

    @flow.task(after=["notify", other])
    async def archive() -> str:
        seen.append("archive")
        return "archived"

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    assert seen == ["other", "load", "notify", "archive"]
    assert result["notify"] == "sent"


async def test_def_task_runs_in_a_worker_thread(make_runner: MakeRunner) -> None:
    flow = Flow("threads")
    loop_thread = threading.get_ident()

    @flow.task
    def blocking() -> int:
        return threading.get_ident()

    @flow.task
    async def native() -> int:
        return threading.get_ident()

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["blocking"] != loop_thread
    assert result["native"] == loop_thread


async def test_def_task_result_flows_to_async_task(make_runner: MakeRunner) -> None:
    flow = Flow("mixed", params={"n": 4})

    @flow.task
    def numbers(n: int) -> list[int]:
        return list(range(n))

    @flow.task
    async def doubled(numbers: list[int]) -> list[int]:
        return [x * 2 for x in numbers]

    @flow.task
    def total(doubled: list[int]) -> int:
        return sum(doubled)

    async with make_runner() as runner:
        result = await runner.run(flow, {"n": 5})
    assert result["total"] == 20


async def test_run_context_fields(make_runner: MakeRunner, db_path: Path) -> None:
    flow = Flow("ctx", params={"region": "eu", "limit": 10})
    seen: dict[str, Run] = {}

    @flow.task
    async def first(run: Run, region: str) -> str:
        seen["first"] = run
        return region

    @flow.task(retries=1, retry_delay=0)
    def second(run: Run, first: str) -> str:
        seen[f"second#{run.attempt}"] = run
        run.log.info("attempt %d for %s", run.attempt, first)
        if run.attempt == 1:
            raise ConnectionError("flaky")
        return "ok"

    logical = datetime(2026, 3, 1, 6, 30, tzinfo=UTC)
    async with make_runner() as runner:
        result = await runner.run(
            flow,
            {"region": "us"},
            trigger={"kind": "cron", "expr": "30 6 * * *"},
            logical_date=logical,
        )
    assert result.state is RunState.SUCCEEDED
    run = seen["first"]
    assert run.id == result.id
    assert run.flow == "ctx"
    assert run.task == "first"
    assert run.index is None
    assert run.logical_date == logical
    assert run.logical_date.tzinfo is not None
    assert dict(run.params) == {"region": "us", "limit": 10}
    assert dict(run.trigger) == {"kind": "cron", "expr": "30 6 * * *"}
    assert run.attempt == 1
    assert run.key == "ctx/2026-03-01T06:30:00Z/first"
    assert seen["second#1"].attempt == 1
    assert seen["second#2"].attempt == 2
    assert seen["second#2"].key == "ctx/2026-03-01T06:30:00Z/second"  # stable across attempts

    logs = await anyio.to_thread.run_sync(stored_logs, db_path, result.id, "second")
    mine = [(line["attempt"], line["level"], line["message"]) for line in logs]
    assert (1, "INFO", "attempt 1 for us") in mine
    assert (2, "INFO", "attempt 2 for us") in mine


async def test_default_logical_date_is_aware_and_trigger_manual(make_runner: MakeRunner) -> None:
    flow = Flow("ctx-default")
    seen: list[Run] = []

    @flow.task
    async def only(run: Run) -> None:
        seen.append(run)

    async with make_runner() as runner:
        await runner.run(flow)
    assert seen[0].logical_date.tzinfo is not None
    assert seen[0].trigger["kind"] == "manual"
    assert seen[0].trigger.kind == "manual"  # attribute access, as file triggers will use
    assert dict(seen[0].trigger) == {"kind": "manual"}
    with pytest.raises(AttributeError, match="this 'manual' trigger has no 'path'"):
        _ = seen[0].trigger.path


async def test_failure_marks_downstream_upstream_failed_while_others_go_on(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("failing")
    independent_may_finish = anyio.Event()

    @flow.task
    async def extract() -> int:
        return 1

    @flow.task
    async def transform(extract: int) -> int:
        raise ValueError("bad row 7")

    @flow.task
    async def load(transform: int) -> int:
        return transform

    @flow.task(after=[load])
    async def notify() -> None:
        pass

    @flow.task
    async def side() -> str:
        # still waiting when transform fails: the failure must not stop this branch
        await independent_may_finish.wait()
        return "side"

    @flow.task
    async def side2(side: str) -> str:
        return side + "2"

    @flow.task
    async def watcher(extract: int) -> None:
        independent_may_finish.set()

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)

    states = {name: t.state for name, t in result.tasks.items()}
    assert states == {
        "extract": TaskState.SUCCEEDED,
        "transform": TaskState.FAILED,
        "load": TaskState.UPSTREAM_FAILED,
        "notify": TaskState.UPSTREAM_FAILED,
        "side": TaskState.SUCCEEDED,
        "side2": TaskState.SUCCEEDED,
        "watcher": TaskState.SUCCEEDED,
    }
    assert result.state is RunState.FAILED
    assert result["side2"] == "side2"
    assert result.tasks["transform"].error == "ValueError: bad row 7"
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    assert stored["state"] == "failed"
    assert stored["error"] == "failed tasks: transform"
    by_name = {t["name"]: t for t in stored["tasks"]}
    assert by_name["load"]["state"] == "upstream_failed"
    assert by_name["load"]["attempts"] == 0
    assert by_name["transform"]["error_type"] == "ValueError"


async def test_events_follow_a_run(make_runner: MakeRunner, events: list[Event]) -> None:
    flow = Flow("evented")

    @flow.task
    async def a() -> int:
        return 1

    @flow.task
    async def b(a: int) -> int:
        return a

    async with make_runner() as runner:
        result = await runner.run(flow)
    kinds = [(type(e).__name__, getattr(e, "task", None)) for e in events if e.run_id == result.id]
    assert kinds == [
        ("RunStarted", None),
        ("TaskStarted", "a"),
        ("TaskEnded", "a"),
        ("TaskStarted", "b"),
        ("TaskEnded", "b"),
        ("RunEnded", None),
    ]
