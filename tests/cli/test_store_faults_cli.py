"""The ``sluiceway`` command under faults, as real subprocesses: a run whose history cannot be
committed before it must exit (another connection holds the write lock; a full disk), a
database that is not Sluiceway's, a history only readable, and a variable of another tool
that shares the prefix."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.cli.flows import DEMO
from tests.cli_helpers import Wrap, killed_at_exit, sluiceway, spawn
from tests.store.test_faults import fill_disk, small_tmpfs
from tests.waiting import WAIT, wait_until

pytestmark = pytest.mark.slow  # every test here runs the sluiceway command as a subprocess

# wait_gate waits for a file "gate" beside the flows folder; after() logs 50 lines
GATED = """
from __future__ import annotations

from pathlib import Path

import anyio

from runtime import Flow, Run

HOME = Path(__file__).resolve().parent.parent
gated = Flow("gated")


@gated.task
async def wait_gate(run: Run) -> int:
    run.log.info("waiting at the gate")
    while not (HOME / "gate").exists():
        await anyio.sleep(0.02)
    return 1


@gated.task
def after(run: Run, wait_gate: int) -> int:
    for i in range(50):
        run.log.info("line %d", i)
    return wait_gate + 1
"""


class Home:
    """A folder with flows/ (DEMO and GATED) and history.db; runs ``sluiceway`` in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.flows = root / "flows"
        self.flows.mkdir()
        (self.flows / "demo.py").write_text(DEMO)
        (self.flows / "gated.py").write_text(GATED)
        self.db = root / "history.db"

    def cli(
        self, *args: str, db: Path | None = None, wrap: Wrap = list, **env: str
    ) -> subprocess.CompletedProcess[str]:
        where = ["--flows", str(self.flows), "--db", str(db or self.db)]
        return sluiceway(*args, *where, cwd=self.root, env=env, wrap=wrap)

    def spawn(self, *args: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
        """Start ``sluiceway ARGS`` in the background; its stderr goes to a file."""
        err_path = self.root / "stderr.txt"
        where = ["--flows", str(self.flows), "--db", str(self.db)]
        return spawn(*args, *where, cwd=self.root, stderr=err_path, env=env), err_path

    def query(self, sql: str, *params: Any, db: Path | None = None) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(db or self.db, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def has_rows(self, sql: str) -> bool:
        """Whether *sql* finds rows; False while the file or its tables do not exist yet."""
        try:
            return self.db.exists() and bool(self.query(sql))
        except sqlite3.OperationalError:
            return False


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


# --- item 2: no success before the history is committed ---


@pytest.mark.parametrize("how", ["budget", "ctrl-c", "released"])
def test_a_run_whose_history_is_locked_at_exit_says_so_and_exits_non_zero(
    home: Home, how: str
) -> None:
    budget = "1" if how == "budget" else "600"
    proc, err_path = home.spawn("run", "gated", SLUICEWAY_COMMIT_TIMEOUT=budget)
    lock = sqlite3.connect(home.db, timeout=10, isolation_level=None)

    def stderr() -> str:
        return err_path.read_text(errors="replace")

    def wait_stderr(text: str) -> None:
        def found() -> bool:
            if text in stderr():
                return True
            assert proc.poll() is None, f"exited {proc.returncode} before {text!r}:\n{stderr()}"
            return False

        wait_until(found, repr(text), timeout=WAIT, details=stderr)

    with killed_at_exit(proc):
        try:
            wait_until(
                lambda: home.has_rows("SELECT 1 FROM tasks WHERE name = 'wait_gate'"),
                "wait_gate running",
                timeout=WAIT,
                details=stderr,
            )
            lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            (home.root / "gate").touch()
            if how != "budget":
                wait_stderr("not committed yet")  # the run ended; its history waits
            if how == "ctrl-c":
                proc.send_signal(signal.SIGINT)
                wait_stderr("press Ctrl-C again to give up")
                proc.send_signal(signal.SIGINT)
            elif how == "released":
                lock.execute("ROLLBACK")
            code = proc.wait(timeout=WAIT)
        finally:
            if lock.in_transaction:
                lock.execute("ROLLBACK")
            lock.close()
    lines = stderr().splitlines()
    if how == "released":  # the wait was long enough: everything landed, then success
        assert code == 0, stderr()
        assert lines[-1] == "run 1 of gated succeeded"
        assert home.query("SELECT state FROM runs") == [("succeeded",)]
        assert home.query("SELECT COUNT(*) FROM logs WHERE name = 'after'") == [(50,)]
        return
    assert code == 1, stderr()
    assert "run 1 of gated succeeded" not in lines
    assert lines[-2] == (
        f"run 1 of gated ended succeeded in this process, but that is not recorded in {home.db}"
    )
    why = "gave up after 1s" if how == "budget" else "given up"
    assert lines[-1].startswith(f"sluiceway: {home.db}: could not commit "), lines[-1]
    assert lines[-1].endswith(
        f"(OperationalError: database is locked; {why}): that history is lost"
    )
    # and the database indeed does not say it succeeded
    assert home.query("SELECT state FROM runs") == [("running",)]
    assert home.query("SELECT COUNT(*) FROM logs WHERE name = 'after'") == [(0,)]


def test_a_run_whose_disk_fills_up_says_so_and_exits_non_zero(home: Home) -> None:
    with small_tmpfs(home.root / "disk", "2m") as disk:
        home.db = disk / "history.db"
        proc, err_path = home.spawn("run", "gated", SLUICEWAY_COMMIT_TIMEOUT="1")
        with killed_at_exit(proc):
            wait_until(
                lambda: home.has_rows("SELECT 1 FROM tasks WHERE name = 'wait_gate'"),
                "wait_gate running",
                timeout=WAIT,
                details=lambda: err_path.read_text(errors="replace"),
            )
            filler = fill_disk(disk)
            (home.root / "gate").touch()
            code = proc.wait(timeout=WAIT)
        filler.unlink()
        stderr = err_path.read_text(errors="replace")
        lines = stderr.splitlines()
        assert code == 1, stderr
        assert "run 1 of gated succeeded" not in lines
        assert lines[-2] == (
            f"run 1 of gated ended succeeded in this process, but that is not recorded in {home.db}"
        )
        assert lines[-1].startswith(f"sluiceway: {home.db}: could not commit "), lines[-1]
        assert "(OperationalError: database or disk is full; gave up after 1s)" in lines[-1]
        assert home.query("SELECT state FROM runs") == [("running",)]
        assert home.query("SELECT COUNT(*) FROM logs WHERE name = 'after'") == [(0,)]


# --- item 9: a database that is not Sluiceway's; a read-only history; SLUICEWAY_* ---


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", [["run", "ok"], ["trigger", "ok"]])
def test_a_database_of_another_program_is_refused_untouched(home: Home, command: list[str]) -> None:
    other = home.root / "inventory.db"
    conn = sqlite3.connect(other)
    with conn:
        conn.execute("CREATE TABLE items (sku TEXT PRIMARY KEY, count INTEGER)")
        conn.execute("INSERT INTO items VALUES ('a-1', 3)")
    conn.close()
    before = _digest(other)
    done = home.cli(*command, db=other)
    assert done.returncode == 1, done.stderr
    assert f"sluiceway: {other}: not a Sluiceway database" in done.stderr
    assert "Traceback" not in done.stderr
    assert _digest(other) == before
    assert sorted(p.name for p in home.root.iterdir() if p.name.startswith("inventory")) == [
        "inventory.db"  # no -wal, -shm or .lock beside it
    ]
    assert home.query("PRAGMA journal_mode", db=other) == [("delete",)]


# what lets root write whatever the file modes say
_OVERRIDES = "--drop=cap_dac_override,cap_dac_read_search,cap_fowner"


@contextmanager
def read_only(folder: Path, how: str) -> Iterator[tuple[Path, Wrap]]:
    """*folder* as a user who may only read it, and how to run a command as that user.

    ``mount``: a read-only bind mount (root only). ``modes``: the modes 0555 and 0444; root
    runs the command without the capabilities that override file modes (``capsh``). Skips
    what this machine does not allow.
    """
    root = os.geteuid() == 0
    if how == "mount":
        if not root:
            pytest.skip("a read-only bind mount needs root")
        view = folder.parent / (folder.name + "-ro")
        view.mkdir(exist_ok=True)
        done = subprocess.run(
            f"mount --bind {folder} {view} && mount -o remount,bind,ro {view}",
            shell=True,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            subprocess.run(["umount", str(view)], capture_output=True, check=False, timeout=30)
            pytest.skip(f"cannot make a read-only bind mount: {done.stderr.strip()}")
        try:
            yield view, list
        finally:
            subprocess.run(["umount", "-l", str(view)], check=False, timeout=30)
        return
    wrap: Wrap = list
    if root:
        if shutil.which("capsh") is None:
            pytest.skip("root, and no capsh to run a command that file modes constrain")

        def wrap(cmd: list[str]) -> list[str]:
            return ["capsh", _OVERRIDES, "--", "-c", shlex.join(cmd)]

    modes = {p: p.stat().st_mode for p in (folder, *folder.iterdir())}
    for path in modes:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        probe = subprocess.run(
            wrap(["touch", str(folder / "probe")]), capture_output=True, timeout=30, check=False
        )
        if probe.returncode == 0:
            pytest.skip("the file modes do not stop this user from writing")
        yield folder, wrap
    finally:
        for path, mode in modes.items():
            path.chmod(mode)


@pytest.mark.parametrize("how", ["mount", "modes"])
def test_a_user_who_may_only_read_reads_the_history(home: Home, how: str) -> None:
    state = home.root / "state"
    state.mkdir()
    db = state / "history.db"
    done = home.cli("run", "ok", db=db)
    assert done.returncode == 0, done.stderr
    assert not (state / "history.db-wal").exists()  # checkpointed at the last close

    def read(expected: list[int]) -> None:
        with read_only(state, how) as (view, wrap):
            ro_db = view / "history.db"
            runs = home.cli("runs", "--json", db=ro_db, wrap=wrap)
            show = home.cli("show", "1", "--json", db=ro_db, wrap=wrap)
            logs = home.cli("logs", "1", db=ro_db, wrap=wrap)
        for done in (runs, show, logs):
            assert done.returncode == 0, done.stderr
        assert [run["id"] for run in json.loads(runs.stdout)] == expected
        assert json.loads(show.stdout)["state"] == "succeeded"
        assert "types int float bool str list" in logs.stdout

    # at rest: the file alone, in a folder where no -shm file can be made
    before = {p.name: _digest(p) for p in state.iterdir()}
    read([1])
    assert {p.name: _digest(p) for p in state.iterdir()} == before  # not a byte written

    # beside a writer (a service): the newest commit is only in its -wal file
    live = sqlite3.connect(db, isolation_level=None)
    try:
        live.execute(
            "INSERT INTO runs (flow, state, logical_date, created_at) "
            "VALUES ('ok', 'queued', '2026-01-02T00:00:00Z', '2026-01-02T00:00:00Z')"
        )
        assert (state / "history.db-wal").exists()
        read([2, 1])
    finally:
        live.close()


def test_an_unknown_sluiceway_variable_is_a_warning_not_an_error(home: Home) -> None:
    assert home.cli("run", "ok").returncode == 0
    done = home.cli("runs", SLUICEWAY_TOKEN="s3cret-for-my-script")
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "SLUICEWAY_TOKEN" in line]
    assert len(warnings) == 1, done.stderr
    assert "WARNING" in warnings[0]
    assert "is not a Sluiceway setting; ignored" in warnings[0]
    assert "s3cret" not in done.stderr
