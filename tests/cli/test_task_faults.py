"""What a hostile task does to ``sluiceway run``, as real subprocesses on real SQLite files:
whatever it raises fails its attempt (and only it), a ``def`` task left running by its timeout
never keeps the process alive, and a task that blocks the loop is named."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import cli_helpers

pytestmark = pytest.mark.slow  # every test here runs the sluiceway command as a subprocess

FAULTS = """
from __future__ import annotations

import asyncio
import sys
import time

from runtime import Flow


class Boom(BaseException):
    pass


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


faults = Flow("faults")


@faults.task
async def exits_0() -> None:
    sys.exit(0)


@faults.task
def exits_3_in_a_thread() -> None:
    sys.exit(3)


@faults.task
async def interrupts() -> None:
    raise KeyboardInterrupt


@faults.task
def interrupts_in_a_thread() -> None:
    raise KeyboardInterrupt


@faults.task
async def booms() -> None:
    raise Boom("boom")


@faults.task
def booms_in_a_thread() -> None:
    raise Boom("boom")


@faults.task
async def generator_exit() -> None:
    raise GeneratorExit


@faults.task
async def cancels_itself() -> None:
    raise asyncio.CancelledError


@faults.task
def stops_iteration() -> None:
    raise StopIteration


@faults.task
async def unprintable() -> None:
    raise Unprintable()


RAISERS = [
    exits_0, exits_3_in_a_thread, interrupts, interrupts_in_a_thread, booms,
    booms_in_a_thread, generator_exit, cancels_itself, stops_iteration, unprintable,
]


@faults.task(after=RAISERS, run_if="all_done")
async def report() -> str:
    return "ran"


exit_zero = Flow("exit_zero")


@exit_zero.task
async def only() -> None:
    sys.exit(0)


stuck = Flow("stuck")


@stuck.task(timeout=1)
def sleeps() -> None:
    time.sleep(600)  # far past any wait of the test: the process must not wait for it


@stuck.task(after=[sleeps], run_if="all_done")
def after_it() -> str:
    return "ran"


hog = Flow("hog")


@hog.task
async def hogs_the_loop() -> None:
    time.sleep(1.5)
"""

# task -> (error type, a line of the traceback: the task's own raise)
RAISED = {
    "exits_0": ("SystemExit", "sys.exit(0)"),
    "exits_3_in_a_thread": ("SystemExit", "sys.exit(3)"),
    "interrupts": ("KeyboardInterrupt", "raise KeyboardInterrupt"),
    "interrupts_in_a_thread": ("KeyboardInterrupt", "raise KeyboardInterrupt"),
    "booms": ("Boom", 'raise Boom("boom")'),
    "booms_in_a_thread": ("Boom", 'raise Boom("boom")'),
    "generator_exit": ("GeneratorExit", "raise GeneratorExit"),
    "cancels_itself": ("CancelledError", "raise asyncio.CancelledError"),
    # as from an async def: a StopIteration leaving a coroutine is a RuntimeError (PEP 479)
    "stops_iteration": ("RuntimeError", "raise StopIteration"),
    "unprintable": ("Unprintable", "raise Unprintable()"),
}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "faults.py").write_text(FAULTS)
    return tmp_path


def sluiceway(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    flows, db = str(home / "flows"), str(home / "history.db")
    return cli_helpers.sluiceway(*args, "--flows", flows, "--db", db, cwd=home, env=env)


def rows(home: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(home / "history.db")
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def test_whatever_a_task_raises_fails_its_attempt_and_the_run_goes_on(home: Path) -> None:
    done = sluiceway(home, "run", "faults")
    assert done.returncode == 1, done.stderr  # a failed run, whatever the tasks' exit codes
    assert done.stderr.splitlines()[-1] == "run 1 of faults failed", done.stderr
    assert "Traceback" not in done.stderr  # every error was recorded, none escaped
    states = dict(rows(home, "SELECT name, state FROM tasks WHERE run_id = 1"))
    assert states == {**dict.fromkeys(RAISED, "failed"), "report": "succeeded"}
    attempts = {
        name: (state, kind, message, tb)
        for name, state, kind, message, tb in rows(
            home,
            "SELECT name, state, error_type, error_message, traceback FROM attempts "
            "WHERE run_id = 1",
        )
    }
    for name, (kind, line) in RAISED.items():
        state, stored_kind, _, traceback = attempts[name]
        assert (state, stored_kind) == ("failed", kind), name
        assert line in traceback, (name, traceback)
    assert attempts["unprintable"][2] == "<str() of Unprintable raised RuntimeError>"
    (run,) = rows(home, "SELECT state, error FROM runs WHERE id = 1")
    assert run[0] == "failed"
    assert run[1].startswith("failed tasks: ")


def test_sys_exit_0_in_a_task_is_a_failed_run_not_the_exit_code(home: Path) -> None:
    done = sluiceway(home, "run", "exit_zero")
    assert done.returncode == 1, done.stderr
    assert "only                     failed" in done.stderr
    assert "SystemExit: 0" in done.stderr
    assert rows(home, "SELECT state FROM runs") == [("failed",)]


def test_validate_reports_durations_out_of_range_with_file_and_line(home: Path) -> None:
    (home / "flows" / "huge.py").write_text(
        "from runtime import Flow\n"
        "\n"
        "huge = Flow('huge', sla=1e12)\n"
        "\n"
        "\n"
        "@huge.task(retry_delay='1e12', timeout=1e12, max_delay='400d', sla=10**400)\n"
        "def a() -> None:\n"
        "    pass\n"
    )
    done = sluiceway(home, "validate")
    assert done.returncode == 1
    problems = done.stderr.splitlines()
    at_most = "must be at most 366 days"
    assert f"flows/huge.py:3: flow 'huge': sla {at_most}, not 1000000000000.0" in problems
    for what in ("retry_delay", "timeout", "max_delay"):
        assert any(
            p.startswith(f"flows/huge.py:7: task 'a': {what} {at_most}") for p in problems
        ), done.stderr
    assert any(p.startswith("flows/huge.py:7: task 'a': sla must be a finite") for p in problems), (
        done.stderr
    )


def test_a_timed_out_def_task_does_not_keep_the_process_alive(home: Path) -> None:
    try:
        done = sluiceway(home, "run", "stuck")  # the task's thread sleeps 10 minutes
    except subprocess.TimeoutExpired:
        pytest.fail("the abandoned thread kept the process alive")
    assert done.returncode == 1, done.stderr
    assert "TaskTimeoutError: attempt 1 timed out after 1s" in done.stderr
    states = dict(rows(home, "SELECT name, state FROM tasks"))
    assert states == {"sleeps": "failed", "after_it": "succeeded"}


def test_a_task_blocking_the_loop_is_named_in_a_warning(home: Path) -> None:
    done = sluiceway(home, "run", "hog", SLUICEWAY_LOOP_BLOCK_THRESHOLD="0.5")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "sluiceway.loop" in line]
    assert warnings, done.stderr
    assert "the event loop has been blocked for" in warnings[0]
    assert "task 'hogs_the_loop' of run 1 (flow 'hog', attempt 1)" in warnings[0]
