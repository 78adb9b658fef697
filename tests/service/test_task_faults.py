"""What a hostile task does to ``sluiceway serve`` (a real subprocess): whatever it raises,
its attempt fails and the service goes on serving; a ``def`` task left running never keeps
the process alive after the shutdown grace; a task blocking the loop is named."""

from __future__ import annotations

import signal

import pytest

from tests.service.flows import _PRELUDE
from tests.service.served import Home
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess

FAULTS = (
    _PRELUDE
    + """
import sys
import time


class Boom(BaseException):
    pass


exits = Flow("exits")


@exits.task
async def calls_sys_exit(run: Run) -> None:
    note("started.txt", run)
    sys.exit(0)


booms = Flow("booms")


@booms.task
async def raises_boom(run: Run) -> None:
    note("started.txt", run)
    raise Boom("not an Exception")


fine = Flow("fine")


@fine.task
async def works(run: Run) -> None:
    note("ledger.txt", run)


slow = Flow("slow")


@slow.task
async def waits(run: Run) -> None:
    note("started.txt", run)
    await gate()
    note("ledger.txt", run)


sleepy = Flow("sleepy")


@sleepy.task
def sleeps(run: Run) -> None:
    note("started.txt", run)
    time.sleep(600)  # far past any wait of the test: the service must not wait for it


hog = Flow("hog")


@hog.task
async def hogs_the_loop(run: Run) -> None:
    time.sleep(1.5)
    note("ledger.txt", run)
"""
)


def wait_run(home: Home, run_id: int, state: str) -> None:
    home.wait_rows(
        "SELECT state FROM runs WHERE id = ?",
        run_id,
        what=f"run {run_id} {state}",
        until=lambda rows: rows == [(state,)],
    )


def error_type(home: Home, run_id: int, task: str) -> str:
    ((kind,),) = home.query(
        "SELECT error_type FROM attempts WHERE run_id = ? AND name = ?", run_id, task
    )
    return str(kind)


def test_sys_exit_in_a_task_fails_its_run_and_the_service_keeps_serving(home: Home) -> None:
    (home.flows / "faults.py").write_text(FAULTS)
    served = home.serve()
    served.wait_ready()
    first = home.trigger("exits")
    wait_run(home, first, "failed")
    assert error_type(home, first, "calls_sys_exit") == "SystemExit"
    assert home.task(first, "calls_sys_exit")["error"] == "SystemExit: 0"
    later = home.trigger("fine")  # still serving
    wait_run(home, later, "succeeded")
    assert home.lines("ledger.txt") == [f"{later} works 1"]
    served.send(signal.SIGTERM)
    assert served.wait_exit(timeout=WAIT) == 0, served.describe()
    assert "service stopped" in served.log()


def test_a_base_exception_in_one_run_does_not_touch_a_run_in_flight(home: Home) -> None:
    (home.flows / "faults.py").write_text(FAULTS)
    served = home.serve()
    served.wait_ready()
    waiting = home.trigger("slow")
    home.wait_lines("started.txt", f"{waiting} waits 1")
    boom = home.trigger("booms")
    wait_run(home, boom, "failed")
    assert error_type(home, boom, "raises_boom") == "Boom"
    assert home.run_states()[waiting] == "running"  # not cancelled
    home.open_gate()
    wait_run(home, waiting, "succeeded")
    assert home.lines("ledger.txt") == [f"{waiting} waits 1"]
    assert served.proc.poll() is None, served.describe()
    served.send(signal.SIGTERM)
    assert served.wait_exit(timeout=WAIT) == 0, served.describe()


def test_a_def_task_still_running_after_the_grace_does_not_delay_the_exit(home: Home) -> None:
    (home.flows / "faults.py").write_text(FAULTS)
    served = home.serve(SLUICEWAY_SHUTDOWN_GRACE="1")
    served.wait_ready()
    run_id = home.trigger("sleepy")
    home.wait_lines("started.txt", f"{run_id} sleeps 1")
    served.send(signal.SIGTERM)
    # 1 s of grace, then the thread is left behind: it sleeps 10 minutes on a daemon thread
    code = served.wait_exit(timeout=WAIT)
    assert code == 0, served.describe()
    assert home.attempts(run_id, "sleeps") == [(1, "failed", "interrupted by service shutdown")]


def test_a_task_blocking_the_loop_is_named_in_the_service_log(home: Home) -> None:
    (home.flows / "faults.py").write_text(FAULTS)
    served = home.serve(SLUICEWAY_LOOP_BLOCK_THRESHOLD="500ms")
    served.wait_ready()
    run_id = home.trigger("hog")
    at = served.wait_log("the event loop has been blocked for")
    line = served.log()[at:].splitlines()[0]
    assert f"task 'hogs_the_loop' of run {run_id} (flow 'hog', attempt 1)" in line
    wait_run(home, run_id, "succeeded")
