"""A realistic run history written straight into a fresh store file, for tests and benches.

    from history import generate                             # bench/ on sys.path
    summary = generate(tmp_path / "h.db", runs=300, flows=3)   # a test's history, ~0.2 s
    .venv/bin/python bench/history.py /tmp/h.db --runs 100000  # the dashboard bench's

The schema is created through the real store (``open_store``: every migration applies); the
rows are then bulk-inserted with ``executemany`` in big transactions on a connection of its
own. That bypasses the store's one writer on purpose: this is test data, not the product.

What it holds: several flows with five tasks each, one of them mapped (``load[0]``...);
runs over months with every trigger kind (schedule, manual, api, event, file, flow,
backfill, retry); failures with tracebacks, retries, upstream_failed and skipped tasks,
cancelled, running and queued runs at the newest end; data-quality checks; ``sla.missed``
events; alert outbox rows (delivered, pending, dead); log lines per attempt.
"""

from __future__ import annotations

import argparse
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# a sibling by name, as the other bench scripts import theirs (the script's folder is on
# sys.path; tests put bench/ there too: tests/service/api/conftest.py)
from history_rows import FLOW_NAMES, TASKS, RunMaker

VERSION = 2  # of the generated rows: part of the bench's cache key (bench/dashboard.py)
BATCH = 2000  # runs per executemany round: bounded memory, big transactions


@dataclass(slots=True)
class History:
    """What :func:`generate` wrote: counts per table, the flows and their tasks, the span."""

    path: Path
    flows: list[str]
    tasks: tuple[str, ...]
    mapped: str
    first: datetime
    last: datetime
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def generate(
    db_path: str | Path,
    *,
    runs: int = 1000,
    tasks_per_run: int = 9,
    flows: int = 5,
    log_lines_per_task: int = 2,
    log_lines: int | None = None,
    retry_rate: float = 0.12,
    failure_rate: float = 0.05,
    days: float = 120.0,
    end: datetime | None = None,
    seed: int = 13,
) -> History:
    """Write a history of *runs* runs into the new store file *db_path*.

    :param tasks_per_run: units per run: four plain tasks and a mapped ``load`` with
        ``tasks_per_run - 4`` instances (at least one); 9 gives about 10 attempts a run
    :param flows: how many flows (named ``orders``, ``billing``...; ``flow_12`` past the list)
    :param log_lines_per_task: log lines per attempt
    :param log_lines: instead, about this many log lines in all, spread over the attempts
        (the log-search bench asks for 10,000,000)
    :param retry_rate: share of units that fail once (or more) and then succeed
    :param failure_rate: share of runs that fail (a unit fails after its retries)
    :param days: the history spans this many days, ending at *end* (default: now)
    :raises FileExistsError: when *db_path* exists (the history goes into a new file)
    """
    began = time.perf_counter()
    path = Path(db_path)
    if path.exists():
        raise FileExistsError(f"{path}: exists; generate writes a new store file")
    _create_schema(path)
    end = end or datetime.now(UTC)
    first = end - timedelta(days=days)
    names = _flow_names(flows)
    per_attempt = float(log_lines_per_task)
    if log_lines is not None:  # about that many in all, over the attempts expected
        started = runs - max(8, runs // 2000) / 2  # about half the open runs are queued
        units = 4 + max(1, tasks_per_run - 4)
        per_attempt = log_lines / max(1.0, started * units * (1 + retry_rate * 1.2))
    maker = RunMaker(
        names,
        instances=max(1, tasks_per_run - 4),
        retry_rate=retry_rate,
        failure_rate=failure_rate,
        log_rate=per_attempt,
        first=first,
        end=end,
        runs=runs,
        seed=seed,
    )
    counts = _write(path, maker, runs)
    return History(
        path=path,
        flows=names,
        tasks=TASKS,
        mapped="load",
        first=first,
        last=end,
        counts=counts,
        seconds=time.perf_counter() - began,
    )


def _flow_names(count: int) -> list[str]:
    return [FLOW_NAMES[i] if i < len(FLOW_NAMES) else f"flow_{i}" for i in range(count)]


def _create_schema(path: Path) -> None:
    """Open the store once (migrations apply), in a thread of its own: the caller may be
    inside an event loop (an async test)."""
    failure: list[BaseException] = []

    def target() -> None:
        import anyio

        from runtime.store import open_store

        async def open_close() -> None:
            async with open_store(path):
                pass

        try:
            anyio.run(open_close)
        except BaseException as exc:  # noqa: BLE001  (handed to the caller's thread)
            failure.append(exc)

    thread = threading.Thread(target=target, name="history schema")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


INSERTS = {
    "runs": "INSERT INTO runs (id, flow, state, params, trigger, logical_date, idempotency_key, "
    "retry_of, created_at, started_at, ended_at, error, wait_reason, epoch) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
    "tasks": "INSERT INTO tasks (run_id, name, idx, state, attempts, started_at, ended_at, "
    "next_attempt_at, error, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "attempts": "INSERT INTO attempts (run_id, name, idx, attempt, state, started_at, ended_at, "
    "error_type, error_message, traceback, interrupted) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "logs": "INSERT INTO logs (run_id, name, idx, attempt, ts, level, message) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)",
    "checks": "INSERT INTO checks (run_id, task, idx, attempt, ts, name, passed, severity, "
    "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "events": "INSERT INTO events (ts, kind, run_id, task, payload) VALUES (?, ?, ?, ?, ?)",
    "outbox": "INSERT INTO outbox (created_at, event, kind, flow, run_id, task, destination, "
    "state, attempts, next_at, last_error, answer, delivered_at, payload, open) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
}


def _write(path: Path, maker: RunMaker, runs: int) -> dict[str, int]:
    """Every row, BATCH runs per round, in one transaction; then the flows' rows, the queue
    wait of the paused flow and statistics for the planner left as a real service would
    (no ANALYZE: the store never runs it)."""
    conn = sqlite3.connect(path, isolation_level=None)
    counts = dict.fromkeys(INSERTS, 0)
    try:
        # test data: no fsync, no rollback journal while loading; WAL again at the end
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN")
        for rows in _batches(maker, runs):
            for table, sql in INSERTS.items():
                conn.executemany(sql, rows[table])
                counts[table] += len(rows[table])
        for flow, updated_at in maker.flow_rows():
            conn.execute(
                "INSERT INTO flows (name, path, source_hash, updated_at) VALUES (?, ?, ?, ?)",
                (flow, f"flows/{flow}.py", "0" * 16, updated_at),
            )
        conn.execute(
            "INSERT INTO paused (flow, paused_at) VALUES (?, ?)", (maker.names[-1], maker.end_iso)
        )
        conn.execute(
            "INSERT INTO queue_waits (flow, reason) VALUES (?, ?)",
            (maker.names[-1], f"flow {maker.names[-1]!r} is paused"),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return counts


def _batches(maker: RunMaker, runs: int) -> Iterator[dict[str, list[tuple[Any, ...]]]]:
    """The batches of rows, built in a thread while the caller inserts the previous one:
    SQLite lets go of the GIL while it writes, so building and writing overlap."""
    ready: queue.Queue[dict[str, list[tuple[Any, ...]]] | BaseException | None] = queue.Queue(2)

    def build() -> None:
        try:
            for start in range(1, runs + 1, BATCH):
                ready.put(maker.batch(start, min(runs, start + BATCH - 1)))
            ready.put(None)
        except BaseException as exc:  # noqa: BLE001  (handed to the inserting thread)
            ready.put(exc)

    builder = threading.Thread(target=build, name="history rows", daemon=True)
    builder.start()
    while (item := ready.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item
    builder.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db", type=Path, help="the new store file")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--tasks-per-run", type=int, default=9)
    parser.add_argument("--flows", type=int, default=8)
    parser.add_argument("--log-lines-per-task", type=int, default=1)
    parser.add_argument("--log-lines", type=int, default=None, help="about this many in all")
    args = parser.parse_args()
    made = generate(
        args.db,
        runs=args.runs,
        tasks_per_run=args.tasks_per_run,
        flows=args.flows,
        log_lines_per_task=args.log_lines_per_task,
        log_lines=args.log_lines,
    )
    rows = ", ".join(f"{n:,} {table}" for table, n in made.counts.items())
    print(f"{made.path}: {rows} in {made.seconds:.1f}s")


if __name__ == "__main__":
    main()
