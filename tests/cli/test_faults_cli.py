"""Issue 9, items 10 and 11, through the real ``sluiceway`` command: flow files that end the
process under ``validate``, ``validate --order`` levels, and ``backfill`` into a pipe and with
task SLAs. Subprocesses on real files; SLUICEWAY_* cleared."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

_SCRIPT = Path(sys.executable).parent / "sluiceway"
SLUICEWAY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "runtime.cli"]
GOOD = """
from runtime import Flow

good = Flow("good")


@good.task
def only() -> int:
    return 1
"""


def sluiceway(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``sluiceway ARGS --flows flows --db history.db`` in *home*, stdout and stderr piped."""
    return subprocess.run(
        [*SLUICEWAY, *args, "--flows", "flows", "--db", "history.db"],
        cwd=home,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def flows(home: Path, **files: str) -> Path:
    folder = home / "flows"
    folder.mkdir(exist_ok=True)
    for name, source in files.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


# --- item 11: task SLAs of backfilled runs, and backfill into a pipe ---

DAILY = """
import sqlite3
import time

import anyio

from runtime import Flow, Run, every

daily = Flow("daily", triggers=[every("1d")], params={{"db": {db!r}}})


@daily.task
def extract(run: Run) -> str:
    return run.logical_date.date().isoformat()


@daily.task(sla=0.2)
async def load(extract: str, db: str) -> str:
    # outlive the SLA until the miss is on record (10 s at most), so it is never a race
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with sqlite3.connect(db) as conn:
            if conn.execute(
                "SELECT 1 FROM events WHERE kind = 'sla.missed' AND task = 'load' "
                "AND run_id = (SELECT max(id) FROM runs)"
            ).fetchone():
                break
        await anyio.sleep(0.05)
    return extract
"""


def test_task_slas_apply_to_the_runs_backfill_executes(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    flows(tmp_path, daily=DAILY.format(db=str(db)))

    done = sluiceway(tmp_path, "backfill", "daily", "--start", "2026-01-01", "--end", "2026-01-02")

    assert done.returncode == 0, done
    with sqlite3.connect(db) as conn:
        missed = conn.execute(
            "SELECT e.run_id, e.task, e.payload, r.trigger FROM events e "
            "JOIN runs r ON r.id = e.run_id WHERE e.kind = 'sla.missed' ORDER BY e.run_id"
        ).fetchall()
    assert [(run, task) for run, task, _, _ in missed] == [(1, "load"), (2, "load")]
    for _, _, payload, trigger in missed:
        assert json.loads(payload)["scope"] == "task"
        assert json.loads(payload)["sla"] == 0.2
        assert json.loads(trigger)["kind"] == "backfill"
    shown = json.loads(
        subprocess.run(
            [*SLUICEWAY, "show", "1", "--json", "--db", str(db)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    )
    assert shown["sla_missed"] is True


def test_backfill_into_a_pipe_prints_one_plain_line_per_run(tmp_path: Path) -> None:
    flows(tmp_path, daily=DAILY.format(db=str(tmp_path / "history.db")))

    done = sluiceway(tmp_path, "backfill", "daily", "--start", "2026-01-01", "--end", "2026-01-03")

    assert done.returncode == 0, done
    assert "\r" not in done.stdout + done.stderr  # no progress-bar frames in a pipe or a log
    assert done.stderr == ""
    assert done.stdout.splitlines() == [
        "backfill daily: 3 scheduled instant(s) from 2026-01-01 to 2026-01-03 inclusive (UTC)",
        "  run    2026-01-01T00:00:00+00:00  run 1 succeeded  [1/3]",
        "  run    2026-01-02T00:00:00+00:00  run 2 succeeded  [2/3]",
        "  run    2026-01-03T00:00:00+00:00  run 3 succeeded  [3/3]",
        "backfill daily: 3 run(s): 3 succeeded, 0 failed, 0 cancelled; 0 skipped",
    ]


# --- item 11: validate --order prints levels ---

FANOUT = """
from runtime import Flow

sales = Flow("sales")


@sales.task
def orders() -> int:
    return 1


@sales.task
def region_eu(orders: int) -> int:
    return orders


@sales.task
def region_us(orders: int) -> int:
    return orders


@sales.task
def region_apac(orders: int) -> int:
    return orders


@sales.task
def combine(region_eu: int, region_us: int, region_apac: int) -> int:
    return region_eu + region_us + region_apac


@sales.task(after=[combine])
def notify() -> None:
    return None


@sales.task
def audit() -> None:  # no upstream: it can start with orders
    return None
"""


def test_validate_order_prints_the_levels_that_run_in_parallel(tmp_path: Path) -> None:
    flows(tmp_path, sales=FANOUT, a_good=GOOD)
    done = sluiceway(tmp_path, "validate", "--order")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "good: only",
        "sales: {orders, audit} -> {region_eu, region_us, region_apac} -> combine -> notify",
    ]
