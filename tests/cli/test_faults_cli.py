"""Issue 9, items 10 and 11, through the real ``sluiceway`` command: flow files that end the
process under ``validate``, ``validate --order`` levels, and ``backfill`` into a pipe and with
task SLAs. Subprocesses on real files; SLUICEWAY_* cleared."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from runtime.define.probe import probe_files
from tests import cli_helpers
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # every test here starts sluiceway or python in a subprocess

GOOD = """
from runtime import Flow

good = Flow("good")


@good.task
def only() -> int:
    return 1
"""


def sluiceway(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``sluiceway ARGS --flows flows --db history.db`` in *home*, stdout and stderr piped."""
    return cli_helpers.sluiceway(*args, "--flows", "flows", "--db", "history.db", cwd=home)


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
    done = cli_helpers.sluiceway("show", "1", "--json", "--db", str(db), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
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


# --- item 10: validate names a file that ends the process ---


def test_validate_names_each_file_that_ends_the_process_and_checks_the_others(
    tmp_path: Path,
) -> None:
    flows(
        tmp_path,
        a_good=GOOD,
        b_exit="import os\n\nos._exit(0)\n",
        c_segfault="import ctypes\n\nctypes.string_at(0)\n",
        d_posix="import posix\n\nposix._exit(3)\n",
        e_after="from runtime import Flow\n\nafter = Flow('after')\n",
    )

    done = sluiceway(tmp_path, "validate")

    assert done.returncode == 1, done
    problems = [line for line in done.stderr.splitlines() if line.startswith("flows/")]
    assert problems == [
        "flows/b_exit.py:3: cannot import: it calls os._exit(0), which would end the process",
        (
            "flows/c_segfault.py:3: importing it crashes the process (killed by signal SIGSEGV); "
            "found in a child process, so it is not imported"
        ),
        (
            "flows/d_posix.py:1: importing it ends the process (exit code 3); found in a child "
            "process, so it is not imported"
        ),
        "flows/e_after.py:3: flow 'after' has no tasks",  # checked after the ones that crashed
    ]
    assert done.stderr.splitlines()[-1] == "4 problem(s) in flows"
    assert done.stdout == ""


def test_validate_of_a_lone_os_exit_file_exits_1_naming_it(tmp_path: Path) -> None:
    flows(tmp_path, bye="import os\nos._exit(0)\n")
    done = sluiceway(tmp_path, "validate")
    assert done.returncode == 1
    assert "flows/bye.py:2: cannot import: it calls os._exit(0)" in done.stderr


def test_a_hung_import_is_stopped_and_reported_and_later_files_are_checked(
    tmp_path: Path,
) -> None:
    folder = flows(
        tmp_path,
        a_hangs="import time\n\nwhile True:\n    time.sleep(0.05)\n",
        b_crashes="import ctypes\nctypes.string_at(0)\n",
        c_good=GOOD,
    )
    files = sorted(folder.glob("*.py"))

    found = probe_files(files, timeout=1)

    assert sorted(found) == files[:2]
    assert found[files[0]].endswith(
        "a_hangs.py:4: its import did not finish within 1s; found in a child process, so it "
        "is not imported"
    )
    assert (
        "b_crashes.py:2: importing it crashes the process (killed by signal SIGSEGV)"
        in (found[files[1]])
    )


FORKS = """
import os

from runtime import Flow

# a forked child's os._exit is its own business: it must end the child, not raise in it
pid = os.fork()
if pid == 0:
    os._exit(7)
_, status = os.waitpid(pid, 0)
forked = Flow("forked", params={"status": os.waitstatus_to_exitcode(status)})


@forked.task
def only() -> None:
    return None
"""


def test_os_exit_is_caught_only_in_the_importing_thread_of_the_importing_process(
    tmp_path: Path,
) -> None:
    folder = flows(tmp_path, exits="import os\nos._exit(5)\n", forks=FORKS)
    script = (
        "import json, sys\n"
        "from runtime.define.loader import load_flows\n"
        "loaded = load_flows(sys.argv[1])\n"
        "print(json.dumps({'flows': {n: f.params for n, f in loaded.flows.items()},"
        " 'problems': [p.splitlines()[0] for p in loaded.problems]}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "flows": {"forked": {"status": 7}},
        "problems": [
            "flows/exits.py:2: cannot import: it calls os._exit(5), which would end the process"
        ],
    }
