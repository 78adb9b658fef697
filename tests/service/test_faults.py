"""Faults the service must ride out, against the real ``sluiceway serve`` as a subprocess: a
backlog of runs that cannot start, runs orphaned by a crash whose flow does not load, and a
flows folder that goes away while serving."""

from __future__ import annotations

import json
import signal

import pytest

from tests.service.flows import ALPHA, CRASH, QUEUE, TICK, TYPED
from tests.service.served import Home
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess

BACKLOG = 1_001  # one more than the old queue query read
RESTART = "interrupted by service restart"


@pytest.mark.parametrize(
    ("blocked", "reason"),
    [
        ("held", "waiting: flow 'held' is paused"),
        ("capped", "waiting: max_active_runs=1 reached"),
        ("ghost", "waiting: flow 'ghost' is not loaded"),
    ],
    ids=["paused", "max-active-runs", "not-loaded"],
)
def test_a_backlog_of_runs_that_cannot_start_holds_back_no_other_flow(
    home: Home, blocked: str, reason: str
) -> None:
    # --- 3. one flow's backlog starves the others ---
    (home.flows / "queue.py").write_text(QUEUE)
    served = home.serve()
    served.wait_ready()
    assert home.cli("pause", "held").returncode == 0
    running = home.trigger("capped")  # waits at the gate: capped is at max_active_runs
    home.wait_lines("started.txt", f"{running} cap 1")

    backlog = home.queue_runs(blocked, BACKLOG)
    home.wait_reason(backlog[-1], reason)  # every blocked run says why, the newest too
    run = home.trigger("other")
    home.wait_rows(
        "SELECT state FROM runs WHERE id = ?",
        run,
        what="the run of other succeeded",
        until=lambda rows: rows == [("succeeded",)],
        timeout=20,
    )

    assert home.lines("ledger.txt") == [f"{run} go 1"], served.describe()
    queued = home.query("SELECT id FROM runs WHERE flow = ? AND state = 'queued'", blocked)
    assert [row[0] for row in queued] == backlog
    for run_id in (backlog[0], backlog[-1]):
        shown = home.cli("show", str(run_id), "--json")
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["wait_reason"] == reason
    listed = home.cli("runs", "--flow", blocked, "--state", "queued", "--limit", "5", "--json")
    assert [r["wait_reason"] for r in json.loads(listed.stdout)] == [reason] * 5
    assert f"  {reason}" in home.cli("show", str(backlog[-1])).stdout.splitlines()


# --- 7. runs that recovery could not resume ---


def test_a_run_orphaned_while_its_flow_file_is_broken_waits_and_resumes_when_it_loads(
    home: Home,
) -> None:
    (home.flows / "crash.py").write_text(CRASH)
    first = home.serve()
    first.wait_ready()
    run = home.trigger("chain")
    home.wait_lines("started.txt", f"{run} b 1")
    home.wait_rows(
        "SELECT state FROM tasks WHERE run_id = ? AND name = 'b'",
        run,
        what="b running",
        until=lambda rows: rows == [("running",)],
    )
    first.kill9()
    (home.flows / "crash.py").write_text(CRASH + "\ndef oops(:\n")  # a broken edit

    second = home.serve()
    second.wait_ready()
    log = second.log()
    assert "recovery: 0 run(s) resumed; 1 run(s) wait for their flow to load: ['chain']" in log, log
    assert f"run={run} flow=chain cannot resume: the flow is not loaded" in log
    home.wait_reason(run, "waiting: flow 'chain' is not loaded")
    assert home.run_states() == {run: "running"}
    shown = home.cli("show", str(run))
    assert "  waiting: flow 'chain' is not loaded" in shown.stdout.splitlines(), shown.stdout

    at = len(second.log())
    (home.flows / "crash.py").write_text(CRASH)  # fixed: the reload loads chain
    second.wait_log("added ['chain', ", after=at)
    second.wait_log(f"run={run} flow=chain resuming after a restart", after=at)
    home.wait_lines("started.txt", f"{run} b 2")
    home.open_gate()
    home.wait_rows(
        "SELECT state FROM runs WHERE id = ?",
        run,
        what="the resumed run succeeded",
        until=lambda rows: rows == [("succeeded",)],
        timeout=20,
    )

    assert home.attempts(run, "a") == [(1, "succeeded", None)]  # not run again
    assert home.attempts(run, "b") == [(1, "failed", RESTART), (2, "succeeded", None)]
    assert home.attempts(run, "c") == [(1, "succeeded", None)]
    assert home.run(run)["wait_reason"] is None
    assert sorted(home.lines("ledger.txt")) == [f"{run} a 1", f"{run} b 2", f"{run} c 1"]


# --- 8. a vanished flows folder ---


def test_a_flows_folder_moved_away_keeps_its_flows_and_their_schedules_until_it_returns(
    home: Home,
) -> None:
    (home.flows / "version.txt").write_text("v1")
    (home.flows / "alpha.py").write_text(ALPHA)
    (home.flows / "tick.py").write_text(TICK)
    served = home.serve()
    served.wait_ready()
    home.wait_rows("SELECT id FROM runs WHERE flow = 'tick' AND state = 'succeeded'", what="tick")

    moved = home.root / "flows.moved"
    (last,) = home.query("SELECT MAX(id) FROM runs")[0]
    home.flows.rename(moved)  # a deploy swapping folders by rename, caught half-way
    home.wait_rows(  # the schedule goes on while the folder is away
        "SELECT id FROM runs WHERE flow = 'tick' AND state = 'succeeded' AND id > ?",
        last,
        what="3 more scheduled runs of tick while the folder is away",
        until=lambda rows: len(rows) >= 3,
        timeout=20,
    )
    at = served.wait_log("is missing; the 2 loaded flow(s) stay as they are until it returns")
    done = home.cli("trigger", "alpha")  # the CLI cannot load the folder: the service can
    assert done.returncode == 0, done.stderr
    assert "warning: flow 'alpha' does not load from" in done.stderr
    run = int(done.stdout)
    home.wait_rows(
        "SELECT state FROM runs WHERE id = ?",
        run,
        what="the triggered run succeeded while the folder is away",
        until=lambda rows: rows == [("succeeded",)],
        timeout=20,
    )
    assert not home.flows.exists()

    moved.rename(home.flows)
    served.wait_log("is back", after=at)
    assert "removed ['" not in served.log(), served.describe()
    assert served.log().count("is missing;") == 1, served.describe()  # said once
    assert f"{run} work 1 v1" in home.lines("ledger.txt")
    after = home.trigger("alpha")  # from the folder again, no warning
    home.wait_rows(
        "SELECT state FROM runs WHERE id = ?",
        after,
        what="a run triggered after the folder returned",
        until=lambda rows: rows == [("succeeded",)],
        timeout=20,
    )


def test_trigger_queues_a_run_of_a_served_flow_whose_file_is_broken(home: Home) -> None:
    (home.flows / "typed.py").write_text(TYPED)
    served = home.serve()
    served.wait_ready()
    broken_line = TYPED.count("\n") + 1
    (home.flows / "typed.py").write_text(TYPED + "def oops(:\n")
    served.wait_log("(the last good version stays)")

    done = home.cli("trigger", "typed", "--param", "n=5", "--json")

    assert done.returncode == 0, done.stderr
    assert f"flows/typed.py:{broken_line}: cannot import: SyntaxError" in done.stderr
    assert "warning: flow 'typed' does not load from" in done.stderr
    queued = json.loads(done.stdout)
    assert (queued["flow"], queued["created"]) == ("typed", True)
    run = queued["id"]
    home.wait_rows(
        "SELECT state FROM runs WHERE id = ?",
        run,
        what="the run of the last good version succeeded",
        until=lambda rows: rows == [("succeeded",)],
        timeout=20,
    )
    assert home.lines("ledger.txt") == [f"{run} record 1 5 'x'"]  # n typed after the default
    assert home.run(run)["params"] == {"n": 5, "tag": "x"}

    # a param the service's version does not declare is a usage error, as from a good file
    bad = home.cli("trigger", "typed", "--param", "nope=1")
    assert bad.returncode == 2, bad.stderr
    assert "flow 'typed' has no param 'nope' (params: n, tag)" in bad.stderr
    # no service, no last good version: the broken file is an error, as before
    served.send(signal.SIGTERM)
    assert served.wait_exit(timeout=WAIT) == 0
    stopped = home.cli("trigger", "typed")
    assert stopped.returncode == 2, stopped.stderr
    assert "does not load from" not in stopped.stderr
    assert len(home.run_states()) == 1
