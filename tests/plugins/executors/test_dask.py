"""executor="dask" on a real LocalCluster with worker processes, started here (one per module):
results, logs, checks, retries, timeouts, cancel, limits measured on the workers, a worker
killed mid-task, local and Dask tasks in one flow."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import dask
import distributed
import pytest

from runtime import Branch, Flow, Run, Skip
from runtime.define.result import RunResult
from runtime.engine.handle import RunHandle
from runtime.states import RunState, TaskState
from runtime.store import queries
from runtime.testing import open_test_runner
from tests.waiting import WAIT

# a cluster of worker processes; the waits poll files the workers write and the scheduler's
# state, which no event announces in this process
pytestmark = pytest.mark.slow

S = TaskState


@pytest.fixture(scope="module")
def cluster() -> Iterator[distributed.LocalCluster]:
    """Two worker processes of three threads; a task whose worker dies fails at once
    (``allowed-failures = 0``, as the plugin's own local clusters are set up)."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        local = distributed.LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            threads_per_worker=3,
            processes=True,
            dashboard_address=":0",
            host="127.0.0.1",
        )
    try:
        yield local
    finally:
        local.close()


async def eventually(check: Callable[[], object], what: str) -> None:
    """Poll *check* (files the workers write, the scheduler's state) until it holds."""
    with anyio.fail_after(WAIT):
        while True:
            if check():
                return
            await anyio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover


def workers(cluster: distributed.LocalCluster) -> set[str]:
    return set(cluster.scheduler_info["workers"])


def processing(cluster: distributed.LocalCluster) -> int:
    """Tasks the scheduler counts as running on some worker now."""
    scheduler = cluster.scheduler
    assert scheduler is not None
    return sum(len(ws.processing) for ws in scheduler.workers.values())


async def run(
    cluster: distributed.LocalCluster,
    db: Path,
    flow: Flow,
    handle: RunHandle | None = None,
    **options: Any,
) -> tuple[RunResult, dict[str, Any]]:
    executors = {"dask": {"address": cluster.scheduler_address, "connect_timeout": "5s"}}
    async with open_test_runner(db, executors=executors, **options) as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow, handle=handle)
        stored = await runner.store.read(queries.get_run, result.id)
        stored["logs"] = await runner.store.read(queries.get_logs, result.id, None)
        return result, stored


def tries(stored: dict[str, Any], name: str) -> list[dict[str, Any]]:
    (task,) = [t for t in stored["tasks"] if t["name"] == name and "index" not in t]
    return list(task["tries"])


class FlowFailure(Exception):
    """Defined beside the flow: retry_on must recognise it when it comes back from a worker."""


async def test_def_and_async_bodies_results_logs_checks_and_a_local_task(
    cluster: distributed.LocalCluster, db_path: Path
) -> None:
    flow = Flow("mixed")

    @flow.task(executor="dask")
    def extract(run: Run) -> list[int]:
        run.log.info("extracting in pid %s", os.getpid())
        run.check("rows", True, detail="3 rows")
        return [1, 2, 3]

    @flow.task(executor="dask")
    async def transform(extract: list[int], run: Run) -> dict[str, Any]:
        await asyncio.sleep(0)
        run.log.warning("attempt %d of %s", run.attempt, run.task)
        return {"total": sum(extract), "pid": os.getpid(), "key": run.key}

    @flow.task  # local: in this process
    def load(transform: dict[str, Any]) -> int:
        return int(transform["total"]) * 10 + int(transform["pid"] == os.getpid())

    result, stored = await run(cluster, db_path, flow)

    assert result.state is RunState.SUCCEEDED, stored
    assert result.tasks["extract"].result == [1, 2, 3]
    assert result.tasks["load"].result == 60  # transform ran in another process
    assert tries(stored, "extract")[0]["worker"] in workers(cluster)
    assert tries(stored, "transform")[0]["worker"] in workers(cluster)
    assert tries(stored, "load")[0]["worker"] is None
    assert result.tasks["transform"].result["key"].startswith("mixed/")
    lines = {(ln["name"], ln["level"], ln["attempt"]): ln["message"] for ln in stored["logs"]}
    assert lines[("extract", "INFO", 1)].startswith("extracting in pid ")
    assert lines[("transform", "WARNING", 1)] == "attempt 1 of transform"
    assert [(c["task"], c["name"], c["passed"]) for c in stored["checks"]] == [
        ("extract", "rows", True)
    ]


async def test_retries_follow_the_policy_with_a_flow_defined_error(
    cluster: distributed.LocalCluster, db_path: Path
) -> None:
    flow = Flow("flaky")

    @flow.task(executor="dask", retries=2, retry_delay=0, retry_on=FlowFailure)
    def flaky(run: Run) -> str:
        if run.attempt < 3:
            raise FlowFailure(f"attempt {run.attempt}")
        return "third time"

    @flow.task(executor="dask", retries=3, retry_delay=0, retry_on=FlowFailure)
    def not_retried() -> None:
        raise ValueError("not in retry_on")

    result, stored = await run(cluster, db_path, flow)

    assert result.tasks["flaky"].state is S.SUCCEEDED
    assert result.tasks["flaky"].attempts == 3
    assert [t["state"] for t in tries(stored, "flaky")] == ["failed", "failed", "succeeded"]
    assert result.tasks["not_retried"].attempts == 1
    assert result.tasks["not_retried"].error == "ValueError: not in retry_on"
    (task,) = [t for t in stored["tasks"] if t["name"] == "not_retried"]
    assert "remote traceback on tcp://" in task["traceback"]
    assert ", in not_retried\nValueError: not in retry_on" in task["traceback"]


async def test_sys_exit_on_a_worker_fails_the_attempt_and_the_worker_stays_up(
    cluster: distributed.LocalCluster, db_path: Path
) -> None:
    flow = Flow("exits")
    before = workers(cluster)

    @flow.task(executor="dask", retries=2, retry_delay=0)
    def quits() -> None:
        sys.exit(3)  # "ends the process": on a worker, only this attempt

    @flow.task(executor="dask")
    async def quits_async() -> None:
        raise SystemExit("bye")

    @flow.task(executor="dask", after=["quits", "quits_async"], run_if="all_done")
    def after() -> int:
        return os.getpid()

    result, stored = await run(cluster, db_path, flow)

    # as for a local task: a failed attempt, not retried (SystemExit is not an Exception,
    # and retry_on is (Exception,) by default)
    assert result.tasks["quits"].state is S.FAILED, stored
    assert result.tasks["quits"].attempts == 1
    assert result.tasks["quits"].error == "SystemExit: 3"
    assert result.tasks["quits_async"].error == "SystemExit: bye"
    assert result.tasks["after"].state is S.SUCCEEDED  # the workers still run tasks
    assert result.tasks["after"].result != os.getpid()
    assert workers(cluster) == before  # no worker went down with the task


async def test_a_result_that_cannot_come_back_fails_the_attempt_clearly(
    cluster: distributed.LocalCluster, db_path: Path
) -> None:
    flow = Flow("unpicklable")

    @flow.task(executor="dask")
    def lock(run: Run) -> Any:
        import threading

        run.log.info("returning a lock")
        return threading.Lock()

    result, stored = await run(cluster, db_path, flow)

    error = result.tasks["lock"].error or ""
    assert error.startswith("ResultNotShippableError: the task's result (a lock) cannot be sent")
    assert "return its path" in error
    assert tries(stored, "lock")[0]["worker"] in workers(cluster)


async def test_a_timeout_cancels_the_future_and_frees_the_worker(
    cluster: distributed.LocalCluster, db_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "body-ended"
    flow = Flow("slow")

    @flow.task(executor="dask", timeout=1)
    async def slow() -> None:
        try:
            await asyncio.sleep(300)  # far past any wait of the test
        finally:
            marker.write_text("cancelled on the worker")

    began = time.monotonic()
    result, _ = await run(cluster, db_path, flow)
    took = time.monotonic() - began

    assert result.tasks["slow"].error == "TaskTimeoutError: attempt 1 timed out after 1s"
    assert took < WAIT  # not the body's 300 s
    await eventually(lambda: marker.exists() and not processing(cluster), "the body cancelled")
    assert marker.read_text() == "cancelled on the worker"


async def test_cancel_stops_the_remote_body(
    cluster: distributed.LocalCluster, db_path: Path, tmp_path: Path
) -> None:
    started, ended = tmp_path / "started", tmp_path / "ended"
    flow = Flow("cancelled")

    @flow.task(executor="dask")
    async def long() -> None:
        started.write_text("on the worker")
        try:
            await asyncio.sleep(30)
        finally:
            ended.write_text("cancelled")

    handle = RunHandle()
    async with anyio.create_task_group() as tg:
        outcome: list[RunResult] = []

        async def go() -> None:
            outcome.append((await run(cluster, db_path, flow, handle))[0])

        tg.start_soon(go)
        await eventually(started.exists, "the body started")
        handle.cancel()
    assert outcome[0].state is RunState.CANCELLED
    assert outcome[0].tasks["long"].state is S.CANCELLED
    await eventually(lambda: ended.exists() and not processing(cluster), "the body cancelled")


async def test_a_map_of_200_keeps_max_concurrency_on_the_workers(
    cluster: distributed.LocalCluster, db_path: Path, tmp_path: Path
) -> None:
    spans = tmp_path / "spans"
    spans.mkdir()
    flow = Flow("fanout")

    @flow.task
    def items() -> list[int]:
        return list(range(200))

    @flow.task(executor="dask", map="items", max_concurrency=4)
    async def each(items: int) -> int:
        start = time.time()
        await asyncio.sleep(0.02)
        (spans / str(items)).write_text(f"{start} {time.time()} {os.getpid()}")
        return items * 2

    result, _ = await run(cluster, db_path, flow)

    assert result.tasks["each"].state is S.SUCCEEDED
    assert result.tasks["each"].result == [i * 2 for i in range(200)]
    marks = []
    pids = set()
    for path in spans.iterdir():
        start, end, pid = path.read_text().split()
        marks += [(float(start), 1), (float(end), -1)]
        pids.add(pid)
    running = peak = 0
    for _, step in sorted(marks, key=lambda m: (m[0], m[1])):  # an end before a start
        running += step
        peak = max(peak, running)
    assert len(marks) == 400
    assert 2 <= peak <= 4  # measured on the workers, six threads there
    assert len(pids) == 2
    assert str(os.getpid()) not in pids


async def test_a_worker_killed_mid_task_fails_the_attempt_and_the_retry_succeeds(
    cluster: distributed.LocalCluster, db_path: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    flow = Flow("killed")

    @flow.task(executor="dask", retries=1, retry_delay=0)
    def victim(run: Run) -> int:
        if run.attempt == 1:
            pid_file.write_text(str(os.getpid()))
            time.sleep(30)  # killed meanwhile
        return os.getpid()

    async with anyio.create_task_group() as tg:
        outcome: list[tuple[RunResult, dict[str, Any]]] = []

        async def go() -> None:
            outcome.append(await run(cluster, db_path, flow))

        tg.start_soon(go)
        await eventually(lambda: pid_file.exists() and pid_file.read_text(), "the pid")
        killed = int(pid_file.read_text())
        os.kill(killed, signal.SIGKILL)
    result, stored = outcome[0]

    assert result.tasks["victim"].state is S.SUCCEEDED
    assert result.tasks["victim"].result != killed
    first, second = tries(stored, "victim")
    assert first["state"] == "failed"
    assert second["state"] == "succeeded"
    assert first["worker"] != second["worker"]
    (task,) = stored["tasks"]
    assert task["attempts"] == 2
    messages = stored_attempt_errors(db_path, result.id)
    assert messages[0].startswith(f"WorkerLostError: Dask worker {first['worker']} died")
    # the nanny starts a new worker process
    await eventually(lambda: len(workers(cluster)) == 2, "a new worker")


def stored_attempt_errors(db: Path, run_id: int) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT error_type, error_message FROM attempts WHERE run_id = ? AND error_type "
            "IS NOT NULL ORDER BY attempt",
            (run_id,),
        ).fetchall()
    finally:
        conn.close()
    return [f"{kind}: {message}" for kind, message in rows]


async def test_skip_and_branch_from_a_worker_act_as_locally(
    cluster: distributed.LocalCluster, db_path: Path
) -> None:
    flow = Flow("control")

    @flow.task(executor="dask")
    def nothing_new() -> None:
        raise Skip("no new files")

    @flow.task(executor="dask")
    async def choose() -> Branch:
        return Branch("small")

    @flow.task(executor="dask")
    def small(choose: Any) -> str:
        return "small path"

    @flow.task(executor="dask")
    def large(choose: Any) -> str:
        return "large path"

    result, _ = await run(cluster, db_path, flow)

    assert result.tasks["nothing_new"].state is S.SKIPPED
    assert result.tasks["nothing_new"].reason == "no new files"
    assert result.tasks["small"].result == "small path"
    assert result.tasks["large"].state is S.SKIPPED
    assert result.tasks["large"].reason == "not chosen by choose"


async def test_a_timed_out_def_body_ends_the_attempt_at_once_and_its_thread_runs_out(
    cluster: distributed.LocalCluster, db_path: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "returned"
    flow = Flow("slow_def")

    @flow.task(executor="dask", timeout=1)
    def slow() -> None:
        time.sleep(3)  # no Python thread can be stopped: it runs out on the worker
        marker.write_text("the def body returned after all")

    result, _ = await run(cluster, db_path, flow)

    assert result.tasks["slow"].error == "TaskTimeoutError: attempt 1 timed out after 1s"
    assert not marker.exists()  # the attempt did not wait for the body
    # the scheduler released the task at once; the worker's thread returns later and its
    # result is dropped
    await eventually(lambda: not processing(cluster), "the task released")
    await eventually(marker.exists, "the body running out on its worker thread")


async def test_a_local_cluster_of_the_executor_runs_tasks_and_closes_with_the_service(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flow = Flow("own_cluster")

    @flow.task(executor="dask")
    def where() -> int:
        return os.getpid()

    executors = {"dask": {"local": {"workers": 1, "threads_per_worker": 1}}}
    async with open_test_runner(db_path, executors=executors) as runner:
        with anyio.fail_after(WAIT):
            result = await runner.run(flow)
        executor: Any = runner.engine.executors.get("dask")
        local = executor._cluster
        assert local.scheduler.allowed_failures == 0  # a dead worker fails the attempt
        (worker,) = local.scheduler.workers
    assert result.tasks["where"].state is S.SUCCEEDED
    assert result.tasks["where"].result != os.getpid()
    assert local.status.name == "closed"  # closed with the runner
    assert "event loop" not in caplog.text  # started in a thread: the loop never blocked
    stored = _stored_tries(db_path, result.id)
    assert stored == [worker]


def _stored_tries(db: Path, run_id: int) -> list[str | None]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return [
            w for (w,) in conn.execute("SELECT worker FROM attempts WHERE run_id = ?", (run_id,))
        ]
    finally:
        conn.close()


async def test_a_module_missing_on_the_workers_fails_the_attempt_saying_so(
    cluster: distributed.LocalCluster, db_path: Path, tmp_path: Path
) -> None:
    (tmp_path / "only_on_the_service.py").write_text("def value() -> int:\n    return 7\n")
    sys.path.insert(0, str(tmp_path))  # the workers started before: they cannot import it
    try:
        helper = importlib.import_module("only_on_the_service")
        flow = Flow("missing_module")

        @flow.task(executor="dask")
        def uses() -> int:
            return int(helper.value())

        result, stored = await run(cluster, db_path, flow)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_on_the_service", None)

    assert result.tasks["uses"].error == (
        "ModuleNotFoundError: No module named 'only_on_the_service'"
    )
    (task,) = stored["tasks"]
    assert "raised while loading the task on Dask worker tcp://" in task["traceback"]
    assert "is every module the task uses installed there?" in task["traceback"]
    assert tries(stored, "uses")[0]["worker"] in workers(cluster)  # it did not die


async def test_an_argument_that_cannot_travel_fails_the_dask_task_clearly(
    cluster: distributed.LocalCluster, db_path: Path
) -> None:
    flow = Flow("local_to_remote")

    @flow.task  # local: its result stays in the service's memory
    def handle() -> Any:
        import threading

        return threading.Lock()

    @flow.task(executor="dask")
    def remote(handle: Any) -> None: ...

    result, _ = await run(cluster, db_path, flow)

    assert result.tasks["handle"].state is S.SUCCEEDED
    assert (result.tasks["remote"].error or "").startswith(
        "ExecutorError: attempt 1's function or arguments cannot be sent to a Dask worker: "
        "TypeError: cannot pickle '_thread.lock' object"
    )
