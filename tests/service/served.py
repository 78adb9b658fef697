"""The real ``sluiceway serve`` as a subprocess, and bounded waits on its log and database.

Every wait has a generous deadline (tests.waiting.WAIT) and fails with the service's log;
:class:`Home` kills whatever service it started when the test ends, passed or not.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime.store import connect_reader, queries
from tests.cli_helpers import sluiceway, spawn
from tests.waiting import WAIT, wait_until


class Served:
    """One ``sluiceway serve`` process; its stderr goes to a file."""

    def __init__(self, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def describe(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        return f"--- service pid {self.pid} ({state}), {self.log_path.name}:\n{self.log()}"

    def wait_log(self, text: str, *, timeout: float = WAIT, after: int = 0) -> int:
        """Wait until *text* is in the log (from character *after* on); returns its offset.

        Fails at once if the process exits first.
        """

        def found() -> int | None:
            at = self.log().find(text, after)
            if at >= 0:
                return at + 1  # truthy even at offset 0
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited before logging {text!r}\n{self.describe()}")
            return None

        return wait_until(found, f"log line {text!r}", timeout=timeout, details=self.describe) - 1

    def wait_ready(self, timeout: float = WAIT) -> None:
        self.wait_log("service ready", timeout=timeout)

    def send(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=WAIT)

    def wait_exit(self, timeout: float) -> int:
        """The exit code, within *timeout* seconds (else the test fails)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"service did not exit within {timeout:g}s\n{self.describe()}"
            ) from None


class Home:
    """A test's folder: ``flows/``, ``history.db``, the tasks' ledger files, service logs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.flows = root / "flows"
        self.flows.mkdir()
        self.db = root / "history.db"
        self.services: list[Served] = []

    # --- processes ---

    def serve(self, **env: str) -> Served:
        """Start ``sluiceway serve --flows flows --db history.db`` with *env* added."""
        log_path = self.root / f"serve-{len(self.services) + 1}.log"
        where = ["--flows", str(self.flows), "--db", str(self.db)]
        proc = spawn("serve", *where, cwd=self.root, stderr=log_path, env=env)
        served = Served(proc, log_path)
        self.services.append(served)
        return served

    def cli(self, *args: str, flows: Path | None = None) -> subprocess.CompletedProcess[str]:
        where = ["--flows", str(flows or self.flows), "--db", str(self.db)]
        return sluiceway(*args, *where, cwd=self.root)

    def trigger(self, flow: str, *, flows: Path | None = None) -> int:
        """``sluiceway trigger FLOW``; returns the queued run's id."""
        done = self.cli("trigger", flow, flows=flows)
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip())

    def cleanup(self) -> None:
        for served in self.services:
            if served.proc.poll() is None:
                served.proc.kill()
            try:
                served.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck zombie
                pass

    def describe(self) -> str:
        return "\n".join(s.describe() for s in self.services)

    # --- the database ---

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Rows of *sql* on the history db; ``[]`` while it does not exist yet."""
        if not self.db.exists():
            return []
        conn = sqlite3.connect(self.db, timeout=5)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def wait_rows(
        self,
        sql: str,
        *params: Any,
        what: str,
        until: Callable[[list[tuple[Any, ...]]], bool] = bool,
        timeout: float = WAIT,
    ) -> list[tuple[Any, ...]]:
        """Poll *sql* until *until* holds for its rows (default: there are some)."""

        def check() -> list[tuple[Any, ...]] | None:
            rows = self.query(sql, *params)
            return rows if until(rows) else None

        def details() -> str:
            return f"last rows: {self.query(sql, *params)}\n{self.describe()}"

        return wait_until(check, what, timeout=timeout, details=details)

    def run(self, run_id: int) -> dict[str, Any]:
        """Run *run_id* as ``show --json`` reads it (its wait reason included)."""
        conn = connect_reader(self.db)
        try:
            return queries.get_run(conn, run_id)
        finally:
            conn.close()

    def wait_reason(self, run_id: int, reason: str | None, *, timeout: float = WAIT) -> None:
        """Wait until ``show`` gives *reason* as the wait reason of run *run_id*."""
        wait_until(
            lambda: self.run(run_id)["wait_reason"] == reason,
            f"run {run_id} showing the wait reason {reason!r}",
            timeout=timeout,
            details=lambda: f"run {run_id}: {self.run(run_id)}\n{self.describe()}",
        )

    def queue_runs(self, flow: str, count: int) -> list[int]:
        """Queue *count* runs of *flow* for the service in one transaction, as many
        ``sluiceway trigger`` (or a backfill) from other processes would; their ids."""
        conn = sqlite3.connect(self.db, timeout=5, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            (last,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM runs").fetchone()
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            conn.executemany(
                "INSERT INTO runs (flow, state, params, trigger, logical_date, created_at) "
                "VALUES (?, 'queued', '{}', '{\"kind\": \"manual\"}', ?, ?)",
                [(flow, now, now)] * count,
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        return list(range(last + 1, last + 1 + count))

    def run_states(self) -> dict[int, str]:
        return dict(self.query("SELECT id, state FROM runs ORDER BY id"))

    def task(self, run_id: int, name: str) -> dict[str, Any]:
        rows = self.query(
            "SELECT state, attempts, error FROM tasks WHERE run_id = ? AND name = ? AND idx = -1",
            run_id,
            name,
        )
        assert rows, f"no task {name!r} in run {run_id}"
        state, attempts, error = rows[0]
        return {"state": state, "attempts": attempts, "error": error}

    def attempts(self, run_id: int, name: str) -> list[tuple[int, str, str | None]]:
        """(attempt, state, error_message) of one task, in order."""
        return [
            (int(n), str(s), m)
            for n, s, m in self.query(
                "SELECT attempt, state, error_message FROM attempts "
                "WHERE run_id = ? AND name = ? ORDER BY attempt",
                run_id,
                name,
            )
        ]

    # --- the tasks' files ---

    def lines(self, name: str) -> list[str]:
        path = self.root / name
        return path.read_text().splitlines() if path.exists() else []

    def wait_lines(self, name: str, *expected: str, timeout: float = WAIT) -> list[str]:
        """Wait until the file *name* holds every one of the *expected* lines."""

        def complete() -> list[str] | None:
            lines = self.lines(name)
            return lines if set(expected) <= set(lines) else None

        return wait_until(
            complete,
            f"lines {expected} in {name}",
            timeout=timeout,
            details=lambda: f"{name}: {self.lines(name)}\n{self.describe()}",
        )

    def open_gate(self) -> None:
        (self.root / "gate").touch()
