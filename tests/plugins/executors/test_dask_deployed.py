"""Against `dask scheduler` and `dask worker` processes: a lost scheduler fails the attempts it
held and the service reconnects once it is back; `sluiceway serve` runs a flow there, and after
its kill -9 the cluster drops its work and the restarted service retries it."""

from __future__ import annotations

import asyncio
import json
import textwrap
from pathlib import Path
from typing import Any

import anyio
import distributed
import pytest

from runtime import Flow
from runtime.define.result import RunResult
from runtime.states import RunState, TaskState
from runtime.testing import open_test_runner
from tests.plugins.executors.dask_procs import dask_processes
from tests.service.served import Home
from tests.waiting import WAIT, wait_until

pytestmark = pytest.mark.slow  # dask scheduler, dask worker and sluiceway serve processes


def idle(address: str) -> bool:
    """No task runs or waits on the cluster at *address*."""
    with distributed.Client(address, timeout=WAIT) as client:  # type: ignore[no-untyped-call]
        busy = client.processing()
        return not any(busy.values())


async def test_a_lost_scheduler_fails_held_attempts_then_the_service_reconnects(
    tmp_path: Path, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    started = tmp_path / "started"
    flow = Flow("held")

    @flow.task(executor="dask")
    async def long() -> None:
        started.write_text("on the worker")
        await asyncio.sleep(30)

    again = Flow("again")

    @again.task(executor="dask")
    def quick() -> str:
        return "back"

    with dask_processes(tmp_path / "dask") as dask:
        dask.start_scheduler()
        dask.start_worker()
        executors = {"dask": {"address": dask.address, "connect_timeout": "3s"}}
        async with open_test_runner(db_path, executors=executors) as runner:
            outcome: list[RunResult] = []
            async with anyio.create_task_group() as tg:

                async def go() -> None:
                    outcome.append(await runner.run(flow))

                tg.start_soon(go)
                with anyio.fail_after(WAIT):
                    while not started.exists():  # noqa: ASYNC110 - a file the worker writes
                        await anyio.sleep(0.05)
                dask.kill_scheduler()
            error = outcome[0].tasks["long"].error or ""
            assert outcome[0].tasks["long"].state is TaskState.FAILED
            assert error.startswith(
                f"ExecutorConnectionError: lost the connection to the Dask scheduler at "
                f"{dask.address} while attempt 1 ran"
            ), error

            assert "allowed-failures" not in caplog.text
            # on the same port; this one runs a task again when its worker dies: said
            dask.start_scheduler(allowed_failures=3)
            dask.start_worker()
            with anyio.fail_after(WAIT):
                result = await runner.run(again)
            assert result.state is RunState.SUCCEEDED, result.tasks["quick"].error
            assert result.tasks["quick"].result == "back"
            assert "(distributed.scheduler.allowed-failures = 3)" in caplog.text


FLOW = """
from __future__ import annotations

import asyncio
from pathlib import Path

from runtime import Flow, Run

flow = Flow("remote")
HERE = Path({here!r})


@flow.task(executor="dask", retries=1, retry_delay=0)
async def work(run: Run) -> str:
    if run.attempt == 1:
        (HERE / "started").write_text("attempt 1")
        try:
            await asyncio.sleep(60)
        finally:
            (HERE / "released").write_text("the cluster dropped it")
    run.log.info("attempt %d on the worker", run.attempt)
    return "done"


@flow.task
def report(work: str) -> str:
    return work + " and reported here"
"""


def show(home: Home, run_id: int) -> dict[str, Any]:
    done = home.cli("show", str(run_id), "--json")
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


def test_serve_against_a_deployed_cluster_survives_its_own_kill_9(home: Home) -> None:
    here = home.root / "marks"
    here.mkdir()
    (home.flows / "remote.py").write_text(FLOW.format(here=str(here)))
    with dask_processes(home.root / "dask") as dask:
        dask.start_scheduler()
        dask.start_worker()
        (home.root / "sluiceway.toml").write_text(
            textwrap.dedent(
                f"""
                [executors.dask]
                address = "{dask.address}"
                connect_timeout = "10s"
                """
            )
        )
        first = home.serve()
        first.wait_ready()
        run_id = home.trigger("remote")
        wait_until(lambda: (here / "started").exists(), "attempt 1 on the worker",
                   details=lambda: home.describe() + dask.logs())  # fmt: skip
        first.kill9()
        # the scheduler saw the dead client's connection close and released its future: the
        # worker cancelled the body (nothing left running unaccounted)
        wait_until(lambda: (here / "released").exists(), "the body released on the worker",
                   details=dask.logs)  # fmt: skip
        assert idle(dask.address)

        second = home.serve()
        second.wait_ready()
        home.wait_rows(
            "SELECT state FROM runs WHERE id = ?",
            run_id,
            what="the resumed run's end",
            until=lambda rows: rows == [("succeeded",)],
        )
        shown = show(home, run_id)
        work = next(t for t in shown["tasks"] if t["name"] == "work")
        assert [a["attempt"] for a in work["tries"]] == [1, 2]
        assert work["tries"][0]["worker"] is None  # interrupted: it never came back
        assert work["tries"][1]["worker"].startswith("tcp://127.0.0.1:")
        report = next(t for t in shown["tasks"] if t["name"] == "report")
        assert report["tries"][0]["worker"] is None  # a local task
        text = home.cli("show", str(run_id)).stdout
        assert f"ran on #2 {work['tries'][1]['worker']}" in text
        logs = home.cli("logs", str(run_id)).stdout
        assert "work #2: attempt 2 on the worker" in logs
