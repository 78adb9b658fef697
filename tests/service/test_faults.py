"""Faults the service must ride out, against the real ``sluiceway serve`` as a subprocess: a
backlog of runs that cannot start, runs orphaned by a crash whose flow does not load, and a
flows folder that goes away while serving."""

from __future__ import annotations

import json

import pytest

from tests.service.flows import CRASH, QUEUE
from tests.service.served import Home

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
    )

    assert home.attempts(run, "a") == [(1, "succeeded", None)]  # not run again
    assert home.attempts(run, "b") == [(1, "failed", RESTART), (2, "succeeded", None)]
    assert home.attempts(run, "c") == [(1, "succeeded", None)]
    assert home.run(run)["wait_reason"] is None
    assert sorted(home.lines("ledger.txt")) == [f"{run} a 1", f"{run} b 2", f"{run} c 1"]
