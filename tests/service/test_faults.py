"""Faults the service must ride out, against the real ``sluiceway serve`` as a subprocess: a
backlog of runs that cannot start, runs orphaned by a crash whose flow does not load, and a
flows folder that goes away while serving."""

from __future__ import annotations

import json

import pytest

from tests.service.flows import QUEUE
from tests.service.served import Home

BACKLOG = 1_001  # one more than the old queue query read


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
