"""The floor: bare asyncio tasks recording the same state changes with aiosqlite.

Per run a row is inserted as running and updated when it ends; per task a row is inserted as
running with a start time, then updated to succeeded with an end time and the result. Changes
wait in lists and are committed as one transaction (executemany) every 50 ms, or at once by
:meth:`FloorStore.flush`. No engine, no limits beyond what a workload needs: the least a
durable orchestrator on this stack can cost.

As a script it is the floor of a fresh process: ``python bench/floor.py DB PRAGMA...`` runs a
5-task chain and exits (the cold-start floor); ``python bench/floor.py --run SHAPE FILE DB
PRAGMA...`` imports a generated module and runs it as one run of SHAPE (the floor of
bench/cli.py): ``independent`` or ``chain`` over the module's ``TASKS`` list of no-argument
``async def`` functions, or ``mapped``: ``items()`` once, then ``work(item)`` for each item.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

TaskFn = Callable[[], Awaitable[Any]]

DDL = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, flow TEXT NOT NULL, state TEXT NOT NULL,
    started_at TEXT, ended_at TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id INTEGER NOT NULL REFERENCES runs(id), name TEXT NOT NULL, state TEXT NOT NULL,
    started_at TEXT, ended_at TEXT, result BLOB, PRIMARY KEY (run_id, name)
);
"""
INSERT_RUN = "INSERT INTO runs (id, flow, state, started_at) VALUES (?, ?, ?, ?)"
UPDATE_RUN = "UPDATE runs SET state = ?, ended_at = ? WHERE id = ?"
INSERT_TASK = "INSERT INTO tasks (run_id, name, state, started_at) VALUES (?, ?, ?, ?)"
UPDATE_TASK = "UPDATE tasks SET state = ?, ended_at = ?, result = ? WHERE run_id = ? AND name = ?"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class FloorStore:
    """Queued state changes, committed in one transaction per interval."""

    def __init__(self, db: aiosqlite.Connection, interval: float) -> None:
        self.db = db
        self.interval = interval
        self.ids = itertools.count(1)  # run ids are handed out here, not read back
        self.run_rows: list[tuple[Any, ...]] = []
        self.run_updates: list[tuple[Any, ...]] = []
        self.task_rows: list[tuple[Any, ...]] = []
        self.task_updates: list[tuple[Any, ...]] = []
        self._lock = asyncio.Lock()

    async def flush(self) -> None:
        """Commit everything queued so far."""
        async with self._lock:
            runs, self.run_rows = self.run_rows, []
            tasks, self.task_rows = self.task_rows, []
            task_updates, self.task_updates = self.task_updates, []
            run_updates, self.run_updates = self.run_updates, []
            if not (runs or tasks or task_updates or run_updates):
                return
            db = self.db
            await db.execute("BEGIN IMMEDIATE")
            # inserts before updates: an update's insert is never in a later batch
            for sql, rows in (
                (INSERT_RUN, runs),
                (INSERT_TASK, tasks),
                (UPDATE_TASK, task_updates),
                (UPDATE_RUN, run_updates),
            ):
                if rows:
                    await db.executemany(sql, rows)
            await db.execute("COMMIT")

    async def run_writer(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()


@contextlib.asynccontextmanager
async def open_floor(
    path: Path, pragmas: Sequence[str], interval: float = 0.05
) -> AsyncIterator[FloorStore]:
    """A fresh floor store on *path* with its writer running; flushed on the way out."""
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in pragmas:
            await db.execute(pragma)
        await db.executescript(DDL)
        store = FloorStore(db, interval)
        writer = asyncio.create_task(store.run_writer())
        try:
            yield store
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            await store.flush()
    finally:
        await db.close()


async def floor_task(store: FloorStore, run_id: int, name: str, fn: TaskFn) -> Any:
    store.task_rows.append((run_id, name, "running", now_iso()))
    result = await fn()
    store.task_updates.append(("succeeded", now_iso(), orjson.dumps(result), run_id, name))
    return result


async def floor_run(store: FloorStore, flow: str, body: Callable[[int], Awaitable[None]]) -> None:
    run_id = next(store.ids)
    store.run_rows.append((run_id, flow, "running", now_iso()))
    await body(run_id)
    store.run_updates.append(("succeeded", now_iso(), run_id))


async def independent(store: FloorStore, fns: Sequence[TaskFn]) -> None:
    """One run of independent tasks, all started at once."""

    async def body(run_id: int) -> None:
        await asyncio.gather(*(floor_task(store, run_id, f"t{i}", fn) for i, fn in enumerate(fns)))

    await floor_run(store, "independent", body)


async def chain(store: FloorStore, fns: Sequence[TaskFn]) -> None:
    """One run of a chain: every task is created up front and awaits the one before it."""

    async def link(prev: asyncio.Task[Any] | None, run_id: int, i: int) -> Any:
        if prev is not None:
            await prev
        return await floor_task(store, run_id, f"t{i}", fns[i])

    async def body(run_id: int) -> None:
        prev: asyncio.Task[Any] | None = None
        for i in range(len(fns)):
            prev = asyncio.create_task(link(prev, run_id, i))
        if prev is not None:
            await prev

    await floor_run(store, "chain", body)


async def limited(store: FloorStore, fns: Sequence[TaskFn], limit: int) -> None:
    """One run of independent tasks, at most *limit* running at once."""
    sem = asyncio.Semaphore(limit)

    async def one(run_id: int, i: int) -> None:
        async with sem:
            await floor_task(store, run_id, f"t{i}", fns[i])

    async def body(run_id: int) -> None:
        await asyncio.gather(*(one(run_id, i) for i in range(len(fns))))

    await floor_run(store, "limited", body)


async def mapped(
    store: FloorStore, source: TaskFn, fn: Callable[[Any], Awaitable[Any]], name: str = "work"
) -> None:
    """One run of a task whose result is mapped: *source* once, then one instance of *fn* per
    item of its result, all started at once (recorded as ``work[0]``, ``work[1]``, ...)."""

    async def body(run_id: int) -> None:
        items = await floor_task(store, run_id, "items", source)
        await asyncio.gather(
            *(
                floor_task(store, run_id, f"{name}[{i}]", partial(fn, item))
                for i, item in enumerate(items)
            )
        )

    await floor_run(store, "mapped", body)


SHAPES = ("independent", "chain", "mapped")


async def _noop() -> None:
    return None


async def _cold(path: Path, pragmas: Sequence[str]) -> None:
    async with open_floor(path, pragmas) as store:
        await chain(store, [_noop] * 5)


async def _generated(shape: str, file: Path, path: Path, pragmas: Sequence[str]) -> None:
    """Import *file* (a generated module) and run it once as *shape*, as a user's file is
    imported and run; the import is part of the time, as it is for ``sluiceway run``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"floor_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{file}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    async with open_floor(path, pragmas) as store:
        if shape == "mapped":
            await mapped(store, module.items, module.work)
        elif shape == "chain":
            await chain(store, module.TASKS)
        else:
            await independent(store, module.TASKS)


if __name__ == "__main__":
    if sys.argv[1] == "--run":
        shape, file, db, *pragmas = sys.argv[2:]
        if shape not in SHAPES:
            raise SystemExit(f"--run SHAPE: one of {', '.join(SHAPES)}, not {shape!r}")
        asyncio.run(_generated(shape, Path(file), Path(db), pragmas))
    else:
        asyncio.run(_cold(Path(sys.argv[1]), sys.argv[2:]))
