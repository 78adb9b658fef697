"""on_flow across service restarts, with the real ``sluiceway serve``: an upstream run that
ended while no service could queue its downstream run (run by ``sluiceway run`` while the
service was stopped, or ended just before a ``kill -9``) gets exactly one downstream run after
the restart, and a second restart makes nothing more."""

from __future__ import annotations

import signal

import pytest

from tests.service.served import Home, Served

pytestmark = pytest.mark.slow

ORDERS = """
from runtime import Flow

orders = Flow("orders", params={"region": "eu"})


@orders.task
def load() -> int:
    return 3
"""

REPORT = """
from __future__ import annotations

import os
from pathlib import Path

from runtime import Flow, Run, on_flow

HOME = Path(__file__).resolve().parent.parent

report = Flow("report", triggers=[on_flow("orders")])


@report.task
def publish(run: Run) -> None:
    with open(HOME / "reports.txt", "a") as fh:
        fh.write(f"{run.id} {run.trigger.flow} {run.trigger.run_id} {run.trigger.params}\\n")
        fh.flush()
        os.fsync(fh.fileno())
"""


AUDIT = """
from runtime import Flow, on_flow

audit = Flow("audit", triggers=[on_flow("report")])


@audit.task
def check() -> None:
    return None
"""


def setup(home: Home, *, chain: bool = False) -> None:
    (home.flows / "orders.py").write_text(ORDERS)
    (home.flows / "report.py").write_text(REPORT)
    if chain:  # orders -> report -> audit
        (home.flows / "audit.py").write_text(AUDIT)


def start(home: Home) -> Served:
    served = home.serve()
    served.wait_ready()  # the start-up pass over the on_flow triggers is done before READY
    return served


def stop(served: Served) -> None:
    served.send(signal.SIGTERM)
    assert served.wait_exit(30) == 0, served.describe()


def report_runs(home: Home) -> list[tuple[int, str | None]]:
    rows = home.query("SELECT id, idempotency_key FROM runs WHERE flow = 'report' ORDER BY id")
    return [(int(run_id), key) for run_id, key in rows]


def wait_reports(home: Home, count: int) -> list[str]:
    home.wait_rows(
        "SELECT id FROM runs WHERE flow = 'report' AND state = 'succeeded'",
        what=f"{count} succeeded report run(s)",
        until=lambda rows: len(rows) >= count,
    )
    return home.lines("reports.txt")


def test_an_upstream_run_made_while_the_service_was_stopped_fires_its_chain_once(
    home: Home,
) -> None:
    setup(home, chain=True)
    stop(start(home))  # the triggers were seen: each cursor starts at its upstream's newest run
    assert home.query("SELECT flow, upstream, cursor FROM upstream_cursors ORDER BY flow") == [
        ("audit", "report", 0),
        ("report", "orders", 0),
    ]
    ran = home.cli("run", "orders")  # another process, no service listening
    assert ran.returncode == 0, ran.stderr
    [(orders_id,)] = home.query("SELECT id FROM runs WHERE flow = 'orders'")
    assert report_runs(home) == []

    second = start(home)
    assert report_runs(home) == [(2, f"flow:orders:{orders_id}")], second.describe()
    assert wait_reports(home, 1) == [f"2 orders {orders_id} {{'region': 'eu'}}"]
    audits = home.wait_rows(  # the chain goes on: report's run started audit's
        "SELECT idempotency_key, state FROM runs WHERE flow = 'audit'",
        what="the audit run succeeded",
        until=lambda rows: rows == [("flow:report:2", "succeeded")],
    )
    stop(second)

    third = start(home)
    assert report_runs(home) == [(2, f"flow:orders:{orders_id}")], third.describe()
    stop(third)
    assert home.query("SELECT idempotency_key, state FROM runs WHERE flow = 'audit'") == audits
    assert home.lines("reports.txt") == [f"2 orders {orders_id} {{'region': 'eu'}}"]


def test_kill_9_right_after_the_upstream_ended_still_gives_one_downstream_run(
    home: Home,
) -> None:
    setup(home)
    first = start(home)
    orders_id = home.trigger("orders")
    home.wait_rows(
        "SELECT state FROM runs WHERE id = ? AND state = 'succeeded'",
        orders_id,
        what="the orders run's end committed",
    )
    first.kill9()  # the report run may or may not be committed yet: both must end the same
    before = report_runs(home)
    assert len(before) <= 1

    second = start(home)
    [(report_id, key)] = report_runs(home)
    assert key == f"flow:orders:{orders_id}", second.describe()
    wait_reports(home, 1)
    stop(second)

    third = start(home)
    assert report_runs(home) == [(report_id, key)], third.describe()
    stop(third)
    assert [line.split()[:3] for line in home.lines("reports.txt")] == [
        [str(report_id), "orders", str(orders_id)]
    ]


def test_kill_9_before_the_service_saw_another_process_s_upstream_run(home: Home) -> None:
    """The widest window between an upstream's end and its downstream's creation: a run
    executed by ``sluiceway run`` beside the service is seen only by the service's next
    periodic pass (every 2 s); the kill comes as soon as that run has ended."""
    setup(home)
    first = start(home)
    ran = home.cli("run", "orders")
    first.kill9()
    assert ran.returncode == 0, ran.stderr
    [(orders_id,)] = home.query("SELECT id FROM runs WHERE flow = 'orders'")
    assert len(report_runs(home)) <= 1  # nearly always none: the pass had not come yet

    second = start(home)
    [(report_id, key)] = report_runs(home)
    assert key == f"flow:orders:{orders_id}", second.describe()
    wait_reports(home, 1)
    stop(second)
    third = start(home)
    assert report_runs(home) == [(report_id, key)], third.describe()
    stop(third)
