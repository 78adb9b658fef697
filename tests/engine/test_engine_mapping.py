"""Dynamic fan-out: ``map=`` runs a task once per item, under limits, with per-instance retries."""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Flow, Run
from runtime.engine.events import Event, TaskEnded, TaskRetrying, TaskStarted
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from runtime.testing import FakeClock
from tests.conftest import MakeRunner
from tests.waiting import WAIT

S = TaskState


def stored_run(db_path: Path, run_id: int) -> dict[str, Any]:
    with closing(connect_reader(db_path)) as conn:
        return queries.get_run(conn, run_id)


def mapped_flow(name: str, items: Any, **options: Any) -> tuple[Flow, list[Run]]:
    flow = Flow(name)
    seen: list[Run] = []

    @flow.task
    async def extract() -> Any:
        return items

    @flow.task(map="extract", **options)
    async def load(run: Run, extract: Any) -> Any:
        seen.append(run)
        return extract * 10

    @flow.task
    async def report(load: list[Any]) -> list[Any]:
        return load

    return flow, seen


async def test_map_over_no_items(make_runner: MakeRunner, db_path: Path) -> None:
    flow, seen = mapped_flow("map-empty", [])
    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    assert result.tasks["load"].state is S.SUCCEEDED
    assert result["load"] == []
    assert result["report"] == []
    assert seen == []
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    load = [t for t in stored["tasks"] if t["name"] == "load"]
    assert [(t.get("index"), t["state"]) for t in load] == [(None, "succeeded")]


async def test_map_over_one_item(make_runner: MakeRunner) -> None:
    flow, seen = mapped_flow("map-one", ["a"])
    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["report"] == ["aaaaaaaaaa"]
    assert [(r.task, r.index) for r in seen] == [("load[0]", 0)]
    (inst,) = result.tasks["load"].instances or []
    assert (inst.name, inst.index, inst.state) == ("load", 0, S.SUCCEEDED)


async def test_map_over_a_generator_result(make_runner: MakeRunner) -> None:
    flow, _ = mapped_flow("map-iterable", (i for i in range(3)))
    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["report"] == [0, 10, 20]


async def test_map_1000_items_under_a_limit_of_5(make_runner: MakeRunner) -> None:
    flow = Flow("map-1000")
    current, peak = 0, 0
    full = anyio.Event()

    @flow.task
    async def extract() -> list[int]:
        return list(range(1000))

    @flow.task(map="extract", max_concurrency=5)
    async def load(extract: int) -> int:
        nonlocal current, peak
        current += 1
        peak = max(peak, current)
        if current == 5:
            full.set()
        await full.wait()  # the first five wait for each other: the peak reaches the limit
        await anyio.lowlevel.checkpoint()
        current -= 1
        return extract * 2

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert peak == 5
    assert result["load"] == [i * 2 for i in range(1000)]
    assert len(result.tasks["load"].instances or []) == 1000


async def test_results_are_in_item_order_whatever_the_finish_order(
    make_runner: MakeRunner,
) -> None:
    flow = Flow("map-order")
    done = [anyio.Event() for _ in range(5)]
    finished: list[int] = []

    @flow.task
    async def extract() -> list[int]:
        return [0, 1, 2, 3, 4]

    @flow.task(map="extract")
    async def load(extract: int) -> str:
        if extract < 4:
            await done[extract + 1].wait()  # instance 4 ends first, then 3, ...
        finished.append(extract)
        done[extract].set()
        return f"item{extract}"

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert finished == [4, 3, 2, 1, 0]
    assert result["load"] == ["item0", "item1", "item2", "item3", "item4"]


async def test_other_parameters_are_passed_whole(make_runner: MakeRunner) -> None:
    flow = Flow("map-other", params={"scale": 3})

    @flow.task
    async def items() -> list[int]:
        return [1, 2]

    @flow.task
    async def header() -> str:
        return "h"

    @flow.task(map="items")
    async def load(items: int, header: str, scale: int) -> str:
        return f"{header}{items * scale}"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["load"] == ["h3", "h6"]


async def test_instance_labels(make_runner: MakeRunner, db_path: Path, events: list[Event]) -> None:
    flow, seen = mapped_flow("map-labels", [0, 1, 2, 3])
    async with make_runner() as runner:
        result = await runner.run(flow)
    third = next(r for r in seen if r.index == 3)
    assert third.task == "load[3]"
    assert third.key.endswith("/load[3]")
    started = sorted(e.task for e in events if isinstance(e, TaskStarted))
    assert started == ["extract", "load[0]", "load[1]", "load[2]", "load[3]", "report"]
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    load = [t for t in stored["tasks"] if t["name"] == "load"]
    assert [t.get("index") for t in load] == [None, 0, 1, 2, 3]
    assert all(t["state"] == "succeeded" for t in load)


async def test_task_events_carry_the_name_and_index(
    make_runner: MakeRunner, events: list[Event]
) -> None:
    flow, _ = mapped_flow("map-events", [5, 6])
    async with make_runner() as runner:
        await runner.run(flow)
    started = {(e.task, e.name, e.index) for e in events if isinstance(e, TaskStarted)}
    assert started == {
        ("extract", "extract", None),
        ("load[0]", "load", 0),
        ("load[1]", "load", 1),
        ("report", "report", None),
    }
    # the mapped task itself ends once, after its instances, with no index
    ended = [(e.task, e.name, e.index) for e in events if isinstance(e, TaskEnded)]
    assert sorted(ended[1:3]) == [("load[0]", "load", 0), ("load[1]", "load", 1)]
    assert ended[3] == ("load", "load", None)


async def test_instance_log_lines_are_stored_per_instance(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("map-logs")

    @flow.task
    async def extract() -> list[str]:
        return ["a.csv", "b.csv"]

    @flow.task(map="extract")
    def load(run: Run, extract: str) -> None:
        run.log.info("loading %s", extract)

    async with make_runner() as runner:
        result = await runner.run(flow)
    with closing(connect_reader(db_path)) as conn:
        lines = queries.get_logs(conn, result.id, "load[1]")
    assert [(line["idx"], line["message"]) for line in lines] == [(1, "loading b.csv")]


async def test_a_failing_instance_with_retries(
    make_runner: MakeRunner, db_path: Path, clock: FakeClock, events: list[Event]
) -> None:
    flow = Flow("map-failing")
    calls: Counter[int] = Counter()
    last_try_of_2 = anyio.Event()

    @flow.task
    async def extract() -> list[int]:
        return [0, 1, 2, 3]

    @flow.task(map="extract", retries=2, retry_delay=1)
    async def load(run: Run, extract: int) -> int:
        calls[extract] += 1
        if extract == 2:
            if run.attempt == 3:
                last_try_of_2.set()
            raise ValueError(f"bad file {extract}")
        if extract == 3:
            await last_try_of_2.wait()  # still running when instance 2 gives up
        return extract

    @flow.task
    async def report(load: list[int]) -> int:
        return sum(load)

    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    assert calls == {0: 1, 1: 1, 2: 3, 3: 1}
    mapped = result.tasks["load"]
    assert mapped.state is S.FAILED
    assert mapped.error == "1 of 4 instances failed: load[2]"
    states = [(i.index, i.state, i.attempts) for i in mapped.instances or []]
    assert states == [
        (0, S.SUCCEEDED, 1),
        (1, S.SUCCEEDED, 1),
        (2, S.FAILED, 3),
        (3, S.SUCCEEDED, 1),
    ]
    assert result.tasks["report"].state is S.UPSTREAM_FAILED
    assert result.state is RunState.FAILED
    assert clock.sleeps == [1, 2]
    assert [e.task for e in events if isinstance(e, TaskRetrying)] == ["load[2]", "load[2]"]
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    inst2 = next(t for t in stored["tasks"] if t.get("index") == 2)
    assert (inst2["state"], inst2["attempts"], inst2["error"]) == (
        "failed",
        3,
        "ValueError: bad file 2",
    )


async def test_retry_reruns_only_the_failed_instance(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("map-retry")
    calls: Counter[str] = Counter()
    broken = {"c.csv"}

    @flow.task
    async def extract() -> list[str]:
        calls["extract"] += 1
        return ["a.csv", "b.csv", "c.csv", "d.csv"]

    @flow.task(map="extract")
    async def load(extract: str) -> str:
        calls[extract] += 1
        if extract in broken:
            raise ConnectionError(f"{extract}: warehouse down")
        return extract.upper()

    @flow.task
    async def report(load: list[str]) -> str:
        calls["report"] += 1
        return ",".join(load)

    async with make_runner() as runner:
        first = await runner.run(flow)
        assert first.tasks["load"].state is S.FAILED
        broken.clear()
        second = await runner.retry(flow, first.id)
    assert second.state is RunState.SUCCEEDED
    assert second["report"] == "A.CSV,B.CSV,C.CSV,D.CSV"
    assert calls == {"extract": 1, "a.csv": 1, "b.csv": 1, "c.csv": 2, "d.csv": 1, "report": 1}
    stored = await anyio.to_thread.run_sync(stored_run, db_path, second.id)
    instances = {t["index"]: t for t in stored["tasks"] if "index" in t}
    assert instances[2]["attempts"] == 1
    assert instances[0]["reason"] == "result reused from an earlier attempt"


async def test_retry_reuses_a_succeeded_mapped_task_whole(make_runner: MakeRunner) -> None:
    flow = Flow("map-retry-new-items")
    calls: Counter[str] = Counter()
    state = {"n": 0}

    @flow.task
    async def extract() -> list[int]:
        state["n"] += 1
        return [1, 2]

    @flow.task(map="extract")
    async def load(extract: int) -> int:
        calls[f"load{extract}"] += 1
        return extract

    @flow.task(after=[load])
    async def publish() -> None:
        calls["publish"] += 1
        if calls["publish"] == 1:
            raise RuntimeError("publish failed")

    async with make_runner() as runner:
        first = await runner.run(flow)
        assert first.state is RunState.FAILED
        second = await runner.retry(flow, first.id)
    assert second.state is RunState.SUCCEEDED
    assert calls == {"load1": 1, "load2": 1, "publish": 2}  # load was reused whole
    assert state["n"] == 1


async def test_non_iterable_upstream_result_fails_clearly(make_runner: MakeRunner) -> None:
    flow, seen = mapped_flow("map-bad", 42)
    async with make_runner() as runner:
        result = await runner.run(flow)
    load = result.tasks["load"]
    assert load.state is S.FAILED
    assert load.error == (
        "map='extract': the result of 'extract' is a int, not a list or other iterable"
    )
    assert result.tasks["report"].state is S.UPSTREAM_FAILED
    assert result.state is RunState.FAILED
    assert seen == []


async def test_iterating_the_upstream_result_fails_clearly(make_runner: MakeRunner) -> None:
    def broken_items() -> Any:
        yield 1
        raise OSError("listing the folder failed")

    flow, _ = mapped_flow("map-broken-iter", broken_items())
    async with make_runner() as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
    load = result.tasks["load"]
    assert load.state is S.FAILED
    assert "map='extract'" in (load.error or "")
    assert "OSError: listing the folder failed" in (load.error or "")
    assert result.state is RunState.FAILED


async def test_skipped_instances(make_runner: MakeRunner) -> None:
    from runtime import Skip

    flow = Flow("map-skip")

    @flow.task
    async def extract() -> list[int]:
        return [0, 1]

    @flow.task(map="extract")
    async def load(extract: int) -> int:
        raise Skip(f"file {extract} is empty")

    @flow.task(run_if="all_done")
    async def report(load: Any) -> str:
        return "reported"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["load"].state is S.SKIPPED
    reasons = [i.reason for i in result.tasks["load"].instances or []]
    assert reasons == ["file 0 is empty", "file 1 is empty"]
    assert result["report"] == "reported"


@pytest.mark.slow
async def test_10000_instances_with_bounded_dispatch(make_runner: MakeRunner) -> None:
    flow = Flow("map-10k")
    most_tasks = 0

    @flow.task
    async def extract() -> list[int]:
        return list(range(10_000))

    @flow.task(map="extract", max_concurrency=10)
    async def load(extract: int) -> int:
        nonlocal most_tasks
        if extract % 500 == 0:  # how many coroutines live while the instances run
            most_tasks = max(most_tasks, len(asyncio.all_tasks()))
        return extract

    async with make_runner() as runner:
        with anyio.fail_after(30):
            result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    assert len(result["load"]) == 10_000
    assert result["load"][9_999] == 9_999
    assert most_tasks < 50  # not one waiting coroutine per instance
