"""``sluiceway trigger``, ``cancel`` and ``backfill``, in process on real flow files and SQLite
files in a temporary folder."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime.define.loader import load_flows
from runtime.store import open_store
from runtime.store.cursors import fire_scheduled
from runtime.store.lock import DatabaseLock
from runtime.store.requests import record_sla_miss
from tests.cli_helpers import main_output

FLOWS = """
from pathlib import Path

import anyio

from runtime import Flow, Run, cron, every

daily = Flow("daily", triggers=[cron("0 2 * * *", tz="Europe/Amsterdam")])


@daily.task
def extract(run: Run) -> str:
    day = run.logical_date.date().isoformat()
    if day == "2026-01-02" and not Path("ready").exists():
        raise ConnectionError(f"no data for {day} yet")
    return day


# four runs a day; each waits for a partner, so two at once is the most that can meet
pairs = Flow("pairs", triggers=[every("6h")])
seen = {"active": 0, "peak": 0}
waiting: list[anyio.Event] = []


@pairs.task
async def meet() -> int:
    seen["active"] += 1
    seen["peak"] = max(seen["peak"], seen["active"])
    if waiting:
        waiting.pop().set()
    else:
        partner = anyio.Event()
        waiting.append(partner)
        with anyio.fail_after(30):
            await partner.wait()
    await anyio.lowlevel.checkpoint()
    seen["active"] -= 1
    return seen["peak"]


plain = Flow("plain", params={"n": 1})


@plain.task
def one(n: int) -> int:
    return n
"""

SPEC = "cron('0 2 * * *', tz='Europe/Amsterdam')"
KEYS = [f"schedule:2026-01-0{day}T01:00:00Z" for day in (1, 2, 3)]  # 02:00 CET
JANUARY = ["--start", "2026-01-01", "--end", "2026-01-03"]


class Cli:
    """``main([...])`` with --flows and --db; returns (exit code, stdout, stderr)."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.flows = home / "flows"
        self.db = home / "history.db"
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        return main_output(self._capsys, *args, "--flows", str(self.flows), "--db", str(self.db))

    def runs(self) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            rows = conn.execute("SELECT * FROM runs ORDER BY id").fetchall()
        finally:
            conn.close()
        return [dict(row) for row in rows]


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    """In tmp_path, the cwd (no sluiceway.toml, no SLUICEWAY_*): the flows folder."""
    (cli_env / "flows").mkdir()
    (cli_env / "flows" / "flows.py").write_text(FLOWS)
    return Cli(cli_env, capsys)


# --- trigger ---


def test_trigger_queues_a_run_and_prints_its_id(cli: Cli) -> None:
    code, out, err = cli("trigger", "plain", "--param", "n=3")
    assert code == 0, err
    assert out == "1\n"
    assert "no service is running" in err
    (run,) = cli.runs()
    assert (run["id"], run["flow"], run["state"]) == (1, "plain", "queued")
    assert json.loads(run["params"]) == {"n": 3}
    assert json.loads(run["trigger"]) == {"kind": "manual", "via": "cli"}


def test_trigger_with_the_same_key_makes_one_run(cli: Cli) -> None:
    code, out, _ = cli("trigger", "plain", "--key", "nightly-7", "--json")
    assert code == 0
    assert json.loads(out) == {"id": 1, "created": True, "flow": "plain", "state": "queued"}
    code, out, err = cli("trigger", "plain", "--key", "nightly-7", "--json")
    assert code == 0
    assert json.loads(out) == {"id": 1, "created": False, "flow": "plain", "state": "queued"}
    assert "already exists for key 'nightly-7'" in err
    assert len(cli.runs()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["trigger", "plain", "--param", "m=1"], "has no param 'm'"),
        (["trigger", "nope"], "unknown flow 'nope'"),
    ],
    ids=["unknown-param", "unknown-flow"],
)
def test_trigger_refuses_bad_input_with_exit_2(cli: Cli, args: list[str], message: str) -> None:
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert message in err
    assert not cli.db.exists()


# --- cancel ---


def test_cancel_of_a_queued_run_cancels_it_at_once(cli: Cli) -> None:
    cli("trigger", "plain")
    code, out, _ = cli("cancel", "1")
    assert (code, out) == (0, "run 1 cancelled (it was queued)\n")
    (run,) = cli.runs()
    assert run["state"] == "cancelled"
    assert run["ended_at"] is not None


def test_cancel_of_a_running_run_requests_it(cli: Cli) -> None:
    cli("trigger", "plain")
    with sqlite3.connect(cli.db) as conn:  # as a service that claimed it would have
        conn.execute("UPDATE runs SET state = 'running' WHERE id = 1")
    code, out, _ = cli("cancel", "1")
    assert code == 0
    assert out.startswith("run 1: cancel requested")
    (run,) = cli.runs()
    assert (run["state"], run["cancel_requested"], run["ended_at"]) == ("running", 1, None)


def test_cancel_of_an_ended_run_exits_1_and_changes_nothing(cli: Cli) -> None:
    code, _, err = cli("run", "plain", "--quiet")
    assert code == 0, err
    before = cli.runs()
    code, out, err = cli("cancel", "1")
    assert (code, out) == (1, "")
    assert err == "sluiceway: run 1 already ended (succeeded); nothing to cancel\n"
    assert cli.runs() == before


def test_cancel_of_an_unknown_run_exits_1(cli: Cli) -> None:
    cli("trigger", "plain")
    code, _, err = cli("cancel", "7")
    assert code == 1
    assert err == "sluiceway: run 7 not found\n"


# --- backfill ---


def test_backfill_dry_run_lists_each_instant_and_creates_nothing(cli: Cli) -> None:
    code, out, _ = cli("backfill", "daily", *JANUARY, "--dry-run")
    assert code == 0
    lines = out.splitlines()
    assert lines[1:4] == [
        "  run    2026-01-01T02:00:00+01:00",
        "  run    2026-01-02T02:00:00+01:00",
        "  run    2026-01-03T02:00:00+01:00",
    ]
    assert lines[-1].startswith("dry run: 3 to run, 0 to retry, 0 to rerun, 0 skipped")
    assert not cli.db.exists()


def test_backfill_runs_each_instant_once_with_the_schedule_keys(cli: Cli) -> None:
    code, out, _ = cli("backfill", "daily", *JANUARY)
    assert code == 1  # the second day failed
    assert out.splitlines()[-1] == (
        "backfill daily: 3 run(s): 2 succeeded, 1 failed, 0 cancelled; 0 skipped"
    )
    runs = cli.runs()
    assert sorted((r["idempotency_key"], r["state"]) for r in runs) == [
        (KEYS[0], "succeeded"),
        (KEYS[1], "failed"),
        (KEYS[2], "succeeded"),
    ]
    assert sorted(r["logical_date"] for r in runs) == [
        "2026-01-01T01:00:00Z",
        "2026-01-02T01:00:00Z",
        "2026-01-03T01:00:00Z",
    ]

    code, out, _ = cli("backfill", "daily", *JANUARY)  # again: every instant has its run
    assert code == 0
    assert out.splitlines()[-1] == "backfill daily: nothing to run; 3 skipped"
    assert len(cli.runs()) == 3

    Path("ready").touch()
    failed = next(r["id"] for r in runs if r["state"] == "failed")
    code, out, _ = cli("backfill", "daily", *JANUARY, "--rerun", "failed")
    assert code == 0
    assert out.splitlines()[-1] == (
        "backfill daily: 1 run(s): 1 succeeded, 0 failed, 0 cancelled; 2 skipped"
    )
    (retry,) = cli.runs()[3:]
    assert (retry["retry_of"], retry["state"]) == (failed, "succeeded")

    code, out, _ = cli("backfill", "daily", *JANUARY, "--rerun", "failed")  # its retry succeeded
    assert out.splitlines()[-1] == "backfill daily: nothing to run; 3 skipped"
    code, out, _ = cli("backfill", "daily", *JANUARY, "--rerun", "all", "--dry-run")
    assert out.splitlines()[-1].startswith("dry run: 0 to run, 0 to retry, 3 to rerun")
    assert len(cli.runs()) == 4


def test_backfill_runs_at_most_max_active_at_once(cli: Cli) -> None:
    code, out, err = cli(
        "backfill", "pairs", "--start", "2026-01-01", "--end", "2026-01-01", "--max-active", "2"
    )
    assert code == 0, out + err
    assert out.splitlines()[-1].startswith("backfill pairs: 4 run(s): 4 succeeded")
    with sqlite3.connect(cli.db) as conn:
        peaks = [json.loads(r[0]) for r in conn.execute("SELECT result FROM tasks")]
    assert max(peaks) == 2


def test_backfilled_instants_are_not_scheduled_again(cli: Cli) -> None:
    Path("ready").touch()
    assert cli("backfill", "daily", *JANUARY)[0] == 0
    flow = load_flows(cli.flows).flows["daily"]
    instants = [datetime(2026, 1, day, 1, tzinfo=UTC) for day in (1, 2, 3)]

    async def schedule() -> list[int]:
        async with open_store(cli.db) as store:
            return await fire_scheduled(
                store,
                flow=flow,
                trigger_key=SPEC,
                instants=instants,
                cursor=instants[-1],
                now=instants[-1],
            )

    assert anyio.run(schedule) == []
    assert len(cli.runs()) == 3


def test_backfill_queues_for_the_service_holding_the_database(cli: Cli) -> None:
    lock = DatabaseLock(cli.db)
    lock.acquire()  # as a running service does
    try:
        code, out, _ = cli("backfill", "daily", *JANUARY)
    finally:
        lock.release()
    assert code == 0
    assert "queued 3 run(s) for the service" in out.splitlines()[-1]
    runs = cli.runs()
    assert [(r["idempotency_key"], r["state"]) for r in runs] == [(k, "queued") for k in KEYS]
    assert all(r["started_at"] is None for r in runs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plain", *JANUARY], "flow 'plain' has no time triggers"),
        (["daily", "--start", "2026-02-30", "--end", "2026-03-01"], "--start '2026-02-30'"),
        (["daily", "--start", "2026-01-01", "--end", "soon"], "--end 'soon'"),
        (["daily", "--start", "2026-01-05", "--end", "2026-01-01"], "is after --end"),
        (["daily", *JANUARY, "--max-active", "0"], "--max-active must be at least 1"),
    ],
    ids=["no-time-triggers", "bad-start", "bad-end", "reversed", "max-active-0"],
)
def test_backfill_refuses_bad_input_with_exit_2(cli: Cli, args: list[str], message: str) -> None:
    code, out, err = cli("backfill", *args)
    assert (code, out) == (2, "")
    assert message in err
    assert not cli.db.exists()


# --- SLA misses in runs and show ---


def test_runs_and_show_mark_a_missed_sla(cli: Cli) -> None:
    cli("trigger", "plain")
    cli("trigger", "plain")
    deadline = "2026-01-01T06:01:00Z"

    async def miss() -> None:
        async with open_store(cli.db) as store:
            now = datetime(2026, 1, 1, 6, 2, tzinfo=UTC)
            payload = {"sla": 60.0, "deadline": deadline, "scope": "flow"}
            assert await record_sla_miss(store, 2, None, now, payload)
            assert not await record_sla_miss(store, 2, None, now, payload)

    anyio.run(miss)
    code, out, _ = cli("runs")
    assert code == 0
    _, second, first = out.splitlines()
    assert second.split()[0] == "2"
    assert second.endswith("  SLA missed")
    assert "SLA" not in first
    code, out, _ = cli("show", "2")
    assert f"  SLA missed: run still going at {deadline} (sla 60s)" in out.splitlines()
    assert "SLA missed" not in cli("show", "1")[1]
