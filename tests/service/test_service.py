"""``sluiceway serve`` as a real subprocess: crash recovery, SIGTERM drain, reload, sd_notify,
the database lock and exactly-once schedules. Waits poll the log or the database against a
deadline; the ``home`` fixture kills any service a test leaves running."""

from __future__ import annotations

import itertools
import shutil
import signal
import socket
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tests.cli_helpers import killed_at_exit, spawn
from tests.service.flows import ALPHA, BROKEN, CRASH, DRAIN, MAPPED, NEWFLOW, TICK
from tests.service.served import Home
from tests.waiting import WAIT, wait_until

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess

RESTART = "interrupted by service restart"
SHUTDOWN = "interrupted by service shutdown"


def wait_task_running(home: Home, task: str, *, count: int = 1, attempt: int = 1) -> list[int]:
    """Wait until *count* runs have *task* running in attempt *attempt*; their run ids."""
    rows = home.wait_rows(
        "SELECT run_id FROM tasks WHERE name = ? AND state = 'running' AND attempts = ? "
        "ORDER BY run_id",
        task,
        attempt,
        what=f"{count} run(s) with {task!r} running at attempt {attempt}",
        until=lambda rows: len(rows) >= count,
    )
    return [r[0] for r in rows]


def wait_runs_ended(home: Home, count: int, timeout: float = WAIT) -> dict[int, str]:
    home.wait_rows(
        "SELECT id FROM runs WHERE state IN ('succeeded', 'failed', 'cancelled')",
        what=f"{count} run(s) ended",
        until=lambda rows: len(rows) >= count,
        timeout=timeout,
    )
    return home.run_states()


# --- 1. crash recovery ---


def test_kill_9_mid_run_loses_nothing_and_reruns_nothing_that_succeeded(home: Home) -> None:
    (home.flows / "crash.py").write_text(CRASH)
    first = home.serve()
    first.wait_ready()
    runs = [home.trigger("chain") for _ in range(3)]
    assert runs == [1, 2, 3]
    # runs 1 and 2 have a done and b waiting at the gate; run 3 waits for a run slot
    assert wait_task_running(home, "b", count=2) == [1, 2]
    home.wait_lines("started.txt", "1 b 1", "2 b 1")
    home.wait_reason(3, "waiting: max_active_runs=2 reached")
    assert home.run_states()[3] == "queued"

    first.kill9()
    second = home.serve()
    second.wait_log("recovery: 2 run(s) resumed")
    wait_task_running(home, "b", count=2, attempt=2)
    home.open_gate()
    states = wait_runs_ended(home, 3)

    assert states == {1: "succeeded", 2: "succeeded", 3: "succeeded"}, home.describe()
    assert home.query("SELECT count(*) FROM runs") == [(3,)]  # none lost, none duplicated
    ledger = home.lines("ledger.txt")
    done = Counter(" ".join(line.split()[:2]) for line in ledger)
    assert sorted(done) == sorted(f"{run} {task}" for run in runs for task in "abc")
    assert set(done.values()) == {1}, ledger  # no succeeded task ran twice
    for run in (1, 2):  # b was interrupted by the kill and succeeded in its second attempt
        assert home.attempts(run, "a") == [(1, "succeeded", None)]
        assert home.attempts(run, "b") == [(1, "failed", RESTART), (2, "succeeded", None)]
        assert f"{run} b 2" in ledger
    assert home.attempts(3, "b") == [(1, "succeeded", None)]
    started = Counter(" ".join(line.split()[:2]) for line in home.lines("started.txt"))
    assert {k: v for k, v in started.items() if v != 1} == {"1 b": 2, "2 b": 2}


@pytest.mark.parametrize(
    ("flow", "task", "why"),
    [("fragile", "once", " (on_crash='fail')"), ("last_try", "once_only", "; no retries left")],
    ids=["on-crash-fail", "no-retries-left"],
)
def test_a_task_interrupted_by_kill_9_fails_when_it_may_not_run_again(
    home: Home, flow: str, task: str, why: str
) -> None:
    (home.flows / "crash.py").write_text(CRASH)
    first = home.serve()
    first.wait_ready()
    run = home.trigger(flow)
    wait_task_running(home, task)
    home.wait_lines("started.txt", f"{run} {task} 1")

    first.kill9()
    home.open_gate()  # another attempt would now succeed at once
    home.serve()
    states = wait_runs_ended(home, 1)

    assert states == {run: "failed"}
    assert home.task(run, task) == {
        "state": "failed",
        "attempts": 1,
        "error": f"InterruptedRunError: {RESTART}{why}",
    }
    assert home.attempts(run, task) == [(1, "failed", RESTART)]
    assert home.lines("started.txt") == [f"{run} {task} 1"]  # not run again
    assert home.lines("ledger.txt") == []


# --- 2, 3. SIGTERM ---


def test_sigterm_lets_a_short_task_finish_within_the_grace(home: Home) -> None:
    (home.flows / "drain.py").write_text(DRAIN)
    # a grace far longer than the wait for the exit: exiting in time means not waiting for it
    served = home.serve(SLUICEWAY_SHUTDOWN_GRACE="300s")
    served.wait_ready()
    run = home.trigger("quick")
    wait_task_running(home, "brief")

    served.send(signal.SIGTERM)
    code = served.wait_exit(timeout=WAIT)  # the stop waited for the run, not the grace

    assert code == 0, served.describe()
    assert "SIGTERM: stopping; 1 run(s) get 300s to finish" in served.log()
    assert "interrupting" not in served.log()
    assert "WARNING" not in served.log()  # a clean stop: no false alarm from the watcher
    assert "service stopped" in served.log()
    assert home.run_states() == {run: "succeeded"}
    assert home.lines("ledger.txt") == [f"{run} brief 1"]


def test_sigterm_interrupts_a_long_task_after_the_grace_and_the_next_start_resumes_it(
    home: Home,
) -> None:
    (home.flows / "drain.py").write_text(DRAIN)
    first = home.serve(SLUICEWAY_SHUTDOWN_GRACE="1s")
    first.wait_ready()
    run = home.trigger("long")
    wait_task_running(home, "nap")

    first.send(signal.SIGTERM)
    began = time.monotonic()
    code = first.wait_exit(timeout=WAIT)  # nap sleeps 60 s: it was interrupted
    took = time.monotonic() - began

    assert code == 0, first.describe()
    assert took >= 1, f"stopped after {took:.1f}s with a 1s grace\n{first.log()}"
    assert "shutdown grace over: interrupting 1 run(s)" in first.log()
    assert f"run={run} flow=long interrupted; it resumes at the next start" in first.log()
    assert home.run_states() == {run: "running"}
    assert home.task(run, "nap") == {
        "state": "pending",
        "attempts": 1,
        "error": f"InterruptedRunError: {SHUTDOWN}",
    }
    assert home.attempts(run, "nap") == [(1, "failed", SHUTDOWN)]

    second = home.serve()
    second.wait_log(f"run={run} flow=long resuming after a restart")
    wait_task_running(home, "nap", attempt=2)
    assert home.wait_lines("started.txt", f"{run} nap 2") == [f"{run} nap 1", f"{run} nap 2"]
    assert home.run_states() == {run: "running"}


@pytest.mark.parametrize("second_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_interrupts_at_once(home: Home, second_signal: signal.Signals) -> None:
    (home.flows / "drain.py").write_text(DRAIN)
    # a grace far longer than the wait for the exit: exiting in time means not waiting for it
    served = home.serve(SLUICEWAY_SHUTDOWN_GRACE="300s")
    served.wait_ready()
    run = home.trigger("long")
    wait_task_running(home, "nap")

    served.send(signal.SIGTERM)
    served.wait_log("SIGTERM: stopping; 1 run(s) get 300s to finish")
    served.send(second_signal)
    code = served.wait_exit(timeout=WAIT)

    assert code == 0, served.describe()
    assert "second signal: interrupting 1 run(s) now" in served.log()
    assert home.run_states() == {run: "running"}  # resumable, not failed
    assert home.attempts(run, "nap") == [(1, "failed", SHUTDOWN)]


# --- 4. reload ---


def test_an_added_flow_file_is_loaded_and_its_triggered_run_runs(home: Home) -> None:
    (home.flows / "version.txt").write_text("v1")
    (home.flows / "alpha.py").write_text(ALPHA)
    served = home.serve()
    served.wait_ready()

    (home.flows / "newflow.py").write_text(NEWFLOW)
    served.wait_log("added ['newflow']")
    run = home.trigger("newflow")
    wait_runs_ended(home, 1)

    assert home.run_states() == {run: "succeeded"}
    assert home.lines("ledger.txt") == [f"{run} hello 1"]


def test_a_replaced_flows_folder_is_watched_again(home: Home) -> None:
    # a watch on a deleted folder reports nothing ever again: the service must re-arm
    (home.flows / "version.txt").write_text("v1")
    (home.flows / "alpha.py").write_text(ALPHA)
    served = home.serve()
    served.wait_ready()
    shutil.rmtree(home.flows)
    home.flows.mkdir()
    served.wait_log("was replaced; watching it again")
    (home.flows / "newflow.py").write_text(NEWFLOW)
    served.wait_log("added ['newflow']")
    run = home.trigger("newflow")
    assert wait_runs_ended(home, 1) == {run: "succeeded"}


def test_a_broken_edit_is_reported_and_the_last_good_version_runs(home: Home) -> None:
    (home.flows / "version.txt").write_text("v1")
    (home.flows / "alpha.py").write_text(ALPHA)
    good = home.root / "good_flows"  # the CLI validates a trigger against the folder it is given
    good.mkdir()
    (good / "version.txt").write_text("v1")
    (good / "alpha.py").write_text(ALPHA)
    served = home.serve()
    served.wait_ready()

    # a good edit (v2), then a broken one: v2 is the last good version
    (home.flows / "version.txt").write_text("v2")
    (home.flows / "alpha.py").write_text(ALPHA + "\n")
    at = served.wait_log("changed ['alpha']")
    broken_line = ALPHA.count("\n") + 1
    (home.flows / "alpha.py").write_text(ALPHA + "def oops(:\n")
    served.wait_log(
        f"reload: flows/alpha.py:{broken_line}: cannot import: SyntaxError: invalid syntax "
        "(the last good version stays)",
        after=at,
    )
    run = home.trigger("alpha", flows=good)
    wait_runs_ended(home, 1)

    assert home.run_states() == {run: "succeeded"}, served.describe()
    assert home.lines("ledger.txt") == [f"{run} work 1 v2"]


def test_sighup_reloads_the_flows(home: Home) -> None:
    (home.flows / "version.txt").write_text("v1")
    (home.flows / "alpha.py").write_text(ALPHA)
    served = home.serve()
    served.wait_ready()
    before = home.trigger("alpha")
    wait_runs_ended(home, 1)

    (home.flows / "version.txt").write_text("v2")  # not a .py file: the watcher ignores it
    served.send(signal.SIGHUP)
    at = served.wait_log("SIGHUP: reloading flows")
    served.wait_log("reloaded flows: 1 loaded", after=at)
    after = home.trigger("alpha")
    wait_runs_ended(home, 2)

    assert home.lines("ledger.txt") == [f"{before} work 1 v1", f"{after} work 1 v2"]
    assert served.proc.poll() is None  # SIGHUP does not stop the service


# --- 5. sd_notify ---


class NotifySocket:
    """A unix datagram socket standing in for systemd's ``$NOTIFY_SOCKET``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def close(self) -> None:
        self.sock.close()

    def receive(self, timeout: float) -> None:
        """Collect every datagram that arrives within *timeout* seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._receive_one()

    def _receive_one(self) -> str | None:
        try:
            message = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append(message)
        return message

    def wait_count(self, message: str, count: int, *, timeout: float = WAIT) -> None:
        """Collect datagrams until *count* of them are *message*."""

        def arrived() -> bool:
            self._receive_one()
            return self.messages.count(message) >= count

        wait_until(
            arrived,
            f"{count} x {message} on the notify socket",
            timeout=timeout,
            details=self.describe,
        )

    def wait_for(self, field: str, *, timeout: float = WAIT) -> list[str]:
        """Collect datagrams until one has the line *field*; returns that datagram's lines."""

        def arrived() -> list[str] | None:
            message = self._receive_one()
            return message.splitlines() if message and field in message.splitlines() else None

        return wait_until(
            arrived, f"{field} on the notify socket", timeout=timeout, details=self.describe
        )

    def describe(self) -> str:
        return f"received so far: {self.messages}"


def test_sd_notify_ready_after_recovery_then_watchdog_status_and_stopping(
    home: Home, notify_socket: NotifySocket
) -> None:
    (home.flows / "drain.py").write_text(DRAIN)
    crashed = home.serve()
    crashed.wait_ready()
    run = home.trigger("long")
    wait_task_running(home, "nap")
    crashed.kill9()

    began = time.monotonic()
    served = home.serve(
        NOTIFY_SOCKET=str(notify_socket.path),
        WATCHDOG_USEC="200000",
        SLUICEWAY_SHUTDOWN_GRACE="0.1s",
    )
    ready = notify_socket.wait_for("READY=1")
    log_at_ready = served.log()
    assert notify_socket.messages[0] == "STATUS=starting"
    assert ready == ["READY=1", "STATUS=1 run(s) active, 2 flow(s)"]
    # recovery was done before READY: logged before it, and before the "ready" line that
    # goes out with it
    recovered = log_at_ready.find("recovery: 1 run(s) resumed")
    assert 0 <= recovered < log_at_ready.find("service ready: 2 flow(s), epoch 2"), log_at_ready

    # the watchdog pings from the loop every 0.1 s (half of WATCHDOG_USEC): it goes on pinging,
    # and never more often than that since the service started (a slow machine pings less)
    notify_socket.wait_count("WATCHDOG=1", 10)
    pings = notify_socket.messages.count("WATCHDOG=1")
    assert pings <= (time.monotonic() - began) / 0.1 + 1, notify_socket.describe()

    served.send(signal.SIGHUP)
    notify_socket.wait_for("RELOADING=1")
    assert notify_socket.wait_for("READY=1") == ["READY=1", "STATUS=1 run(s) active, 2 flow(s)"]

    served.send(signal.SIGTERM)
    stopping = notify_socket.wait_for("STOPPING=1")
    assert stopping == ["STOPPING=1", "STATUS=stopping, 1 run(s)"]
    assert served.wait_exit(timeout=WAIT) == 0
    assert home.run_states() == {run: "running"}  # interrupted again: resumes next time
    assert home.task(run, "nap")["attempts"] == 2


# --- 6. the database lock ---


def test_a_second_service_on_the_same_database_is_refused_at_once(home: Home) -> None:
    (home.flows / "drain.py").write_text(DRAIN)
    first = home.serve()
    first.wait_ready()

    second = home.serve()
    code = second.wait_exit(timeout=WAIT)  # it does not wait for the lock

    assert code == 1, second.describe()
    assert (
        f"sluiceway: {home.db}: another sluiceway service (pid {first.pid}) is using this "
        "database; stop it or pass another --db"
    ) in second.log()
    assert "service ready" not in second.log()
    # the first one is unharmed: it keeps its lock and runs what is queued
    assert first.proc.poll() is None
    assert (home.root / "history.db.lock").read_text().strip() == str(first.pid)
    run = home.trigger("quick")
    assert wait_runs_ended(home, 1) == {run: "succeeded"}


# --- 7, 8. start-up and schedules ---


def test_a_broken_flow_file_at_start_is_reported_and_the_others_run(home: Home) -> None:
    (home.flows / "bad.py").write_text(BROKEN)
    (home.flows / "tick.py").write_text(TICK)
    served = home.serve()
    served.wait_ready()

    log = served.log()
    assert "ERROR sluiceway.runtime.service flows/bad.py:3: cannot import: SyntaxError" in log
    assert "service ready: 1 flow(s)" in log
    home.wait_rows(
        "SELECT id FROM runs WHERE flow = 'tick' AND state = 'succeeded'",
        what="two scheduled runs of tick",
        until=lambda rows: len(rows) >= 2,
    )


def test_scheduled_runs_fire_once_per_instant_across_a_restart(home: Home) -> None:
    (home.flows / "tick.py").write_text(TICK)

    def runs() -> list[tuple[int, str, str]]:
        return [
            (int(i), str(d), str(s))
            for i, d, s in home.query("SELECT id, logical_date, state FROM runs ORDER BY id")
        ]

    first = home.serve()
    first.wait_ready()
    home.wait_rows("SELECT id FROM runs", what="3 runs", until=lambda r: len(r) >= 3)
    first.send(signal.SIGTERM)
    assert first.wait_exit(timeout=WAIT) == 0
    before = runs()

    second = home.serve()
    second.wait_ready()
    home.wait_rows(
        "SELECT id FROM runs WHERE id > ?",
        before[-1][0],
        what="2 runs after the restart",
        until=lambda r: len(r) >= 2,
    )
    second.send(signal.SIGTERM)
    assert second.wait_exit(timeout=WAIT) == 0

    after = runs()
    dates = [d for _, d, _ in after]
    assert len(set(dates)) == len(dates), after  # no instant fired twice
    assert dates == sorted(dates), after
    # every run succeeded, but for any the scheduler queued just before the second SIGTERM:
    # those wait, queued, for the next start (the queue stops first: nothing new starts)
    unfinished = list(itertools.dropwhile(lambda run: run[2] == "succeeded", after))
    assert all(state == "queued" for _, _, state in unfinished), after
    assert len(unfinished) <= 2, after
    instants = [datetime.fromisoformat(d) for d in dates]
    assert all(t.microsecond == 0 for t in instants), dates  # the every("1s") grid
    span = (instants[-1] - instants[0]).total_seconds()
    assert len(instants) <= span + 1
    assert len(instants) >= 5
    # the restart made no second run of an earlier instant (a run still queued at the
    # SIGTERM is run by the next start: its state may change, not its identity)
    assert [(i, d) for i, d, _ in after[: len(before)]] == [(i, d) for i, d, _ in before]


def test_kill_9_mid_mapped_run_reruns_only_the_interrupted_instance(home: Home) -> None:
    (home.flows / "fan.py").write_text(MAPPED)
    first = home.serve()
    first.wait_ready()
    run = home.trigger("fan")
    home.wait_lines("started.txt", f"{run} each[2] 1")
    home.wait_rows(  # committed: what a task did before its state was committed may rerun
        "SELECT idx, state FROM tasks WHERE run_id = ? AND name = 'each' AND idx >= 0",
        run,
        what="each[0] and each[1] succeeded, each[2] running",
        until=lambda rows: sorted(rows) == [(0, "succeeded"), (1, "succeeded"), (2, "running")],
    )
    first.kill9()

    second = home.serve()
    second.wait_log("recovery: 1 run(s) resumed")
    home.wait_lines("started.txt", f"{run} each[2] 2")
    home.open_gate()
    assert wait_runs_ended(home, 1) == {run: "succeeded"}, home.describe()
    ledger = home.lines("ledger.txt")
    assert sorted(ledger) == sorted(
        [f"{run} items 1", f"{run} each[0] 1", f"{run} each[1] 1", f"{run} each[2] 2",
         f"{run} total 1"]
    )  # fmt: skip
    assert home.query(
        "SELECT idx, attempts, state FROM tasks WHERE run_id = ? AND name = 'each' ORDER BY idx",
        run,
    ) == [(-1, 2, "succeeded"), (0, 1, "succeeded"), (1, 1, "succeeded"), (2, 2, "succeeded")]


def test_a_queued_run_of_a_paused_flow_waits_and_says_why(home: Home) -> None:
    (home.flows / "version.txt").write_text("v1")
    (home.flows / "alpha.py").write_text(ALPHA)
    served = home.serve()
    served.wait_ready()
    assert home.cli("pause", "alpha").returncode == 0
    run = home.trigger("alpha")
    home.wait_reason(run, "waiting: flow 'alpha' is paused")
    assert home.run_states() == {run: "queued"}
    assert home.lines("ledger.txt") == []
    assert home.cli("unpause", "alpha").returncode == 0
    assert wait_runs_ended(home, 1) == {run: "succeeded"}
    assert home.lines("ledger.txt") == [f"{run} work 1 v1"]


def test_a_foreground_run_beside_the_service_is_never_run_twice(home: Home) -> None:
    # `sluiceway run` queues its run for itself; a service on the same database must not
    # claim it (before the CLI's "running" is committed) nor resume it as an orphan
    (home.flows / "crash.py").write_text(CRASH)
    served = home.serve()
    served.wait_ready()
    where = ["--flows", str(home.flows), "--db", str(home.db)]
    errors = home.root / "run.log"
    with killed_at_exit(spawn("run", "chain", *where, cwd=home.root, stderr=errors)) as cli:
        home.wait_lines("started.txt", "1 a 1", "1 b 1")
        served.send(signal.SIGTERM)  # and a service started now finds a live owner
        assert served.wait_exit(timeout=WAIT) == 0
        restarted = home.serve()
        restarted.wait_ready()
        home.open_gate()
        assert cli.wait(timeout=WAIT) == 0, errors.read_text()
    assert home.run_states() == {1: "succeeded"}
    assert sorted(home.lines("started.txt")) == ["1 a 1", "1 b 1", "1 c 1"]
    assert "recovery" not in restarted.log()
