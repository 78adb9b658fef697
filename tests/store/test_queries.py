"""The read queries behind ``runs``, ``show`` and ``logs``, on a file the writer filled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from runtime.errors import ParamError, RunNotFoundError
from runtime.store import connect_reader, open_store, queries
from runtime.store.rows import RunRow
from tests.store.rows import at, attempt_row, log_row, new_run, task_row

T = TypeVar("T")


def read(db_path: Path, query: Callable[..., T], *args: Any) -> T:
    """Run one query on a fresh reader, as the CLI does."""
    conn = connect_reader(db_path)
    try:
        return query(conn, *args)
    finally:
        conn.close()


async def _runs(db_path: Path) -> dict[str, int]:
    """Five runs of two flows in three end states; returns their ids by label."""
    async with open_store(db_path) as store:
        ids = {}
        for label, flow, state in [
            ("etl-ok", "etl", "succeeded"),
            ("etl-bad", "etl", "failed"),
            ("fan-ok", "fanout", "succeeded"),
            ("etl-ok2", "etl", "succeeded"),
            ("etl-cxl", "etl", "cancelled"),
        ]:
            run_id = await new_run(store, flow=flow, params={"label": label})
            store.put_run(RunRow(run_id, state, at(run_id), at(run_id + 1)))
            ids[label] = run_id
    return ids


async def test_list_runs_is_newest_first(db_path: Path) -> None:
    ids = await _runs(db_path)
    runs = read(db_path, queries.list_runs)
    assert [r["id"] for r in runs] == sorted(ids.values(), reverse=True)
    first = runs[0]
    assert first["params"] == {"label": "etl-cxl"}
    assert first["duration"] == 1.0
    assert {"id", "flow", "state", "params", "logical_date", "started_at", "ended_at"} <= set(first)


@pytest.mark.parametrize(
    ("flow", "state", "limit", "expected"),
    [
        ("etl", None, 20, ["etl-cxl", "etl-ok2", "etl-bad", "etl-ok"]),
        (None, "succeeded", 20, ["etl-ok2", "fan-ok", "etl-ok"]),
        ("etl", "succeeded", 20, ["etl-ok2", "etl-ok"]),
        (None, None, 2, ["etl-cxl", "etl-ok2"]),
        ("etl", "failed", 1, ["etl-bad"]),
        ("nope", None, 20, []),
        (None, "running", 20, []),
    ],
    ids=["flow", "state", "flow+state", "limit", "all-three", "unknown-flow", "no-such-state"],
)
async def test_list_runs_filters(
    db_path: Path,
    flow: str | None,
    state: str | None,
    limit: int,
    expected: list[str],
) -> None:
    ids = await _runs(db_path)
    label = {v: k for k, v in ids.items()}
    assert [
        label[r["id"]] for r in read(db_path, queries.list_runs, flow, state, limit)
    ] == expected


async def test_get_run_puts_mapped_instances_under_their_task(db_path: Path) -> None:
    async with open_store(db_path) as store:
        run_id = await new_run(store)
        # creation order: tasks first (as the engine records them), instances as they start,
        # out of order
        for name in ("extract", "load", "report"):
            store.put_task(task_row(run_id, name, "pending", attempts=0))
        await store.flush()
        for idx in (2, 0, 1):
            store.put_task(task_row(run_id, "load", "succeeded", idx=idx, ended_at=at(2)))
            await store.flush()
        store.put_task(task_row(run_id, "load", "failed", idx=1, error="ValueError: no"))
        store.put_attempt(attempt_row(run_id, "load", 1, "failed", idx=1, error="no"))
    run = read(db_path, queries.get_run, run_id)
    labels = [(t["name"], t.get("index")) for t in run["tasks"]]
    assert labels == [
        ("extract", None),
        ("load", None),
        ("load", 0),
        ("load", 1),
        ("load", 2),
        ("report", None),
    ]
    assert "index" not in run["tasks"][0]
    for task in run["tasks"]:
        assert {"name", "state", "attempts", "started_at", "ended_at", "error"} <= set(task)
    # instance 1 succeeded first; the later failure did not overwrite that final state
    assert run["tasks"][3]["state"] == "succeeded"
    assert run["tasks"][3]["error"] is None


async def test_get_run_shows_the_last_error_with_its_type(db_path: Path) -> None:
    async with open_store(db_path) as store:
        run_id = await new_run(store)
        store.put_attempt(attempt_row(run_id, "t", 1, "failed", error="first"))
        store.put_attempt(attempt_row(run_id, "t", 2, "failed", error="second"))
        store.put_task(task_row(run_id, "t", "failed", attempts=2, error="ValueError: second"))
    (task,) = read(db_path, queries.get_run, run_id)["tasks"]
    assert (task["state"], task["attempts"], task["error"]) == ("failed", 2, "ValueError: second")
    assert task["error_type"] == "ValueError"
    assert task["traceback"].endswith("ValueError: second")


async def test_get_logs_by_task_and_by_instance(db_path: Path) -> None:
    async with open_store(db_path) as store:
        run_id = await new_run(store)
        other = await new_run(store)
        store.add_log(log_row(run_id, "extract", "e1"))
        store.add_log(log_row(run_id, "load", "l3", idx=3))
        store.add_log(log_row(run_id, "load", "l0", idx=0))
        store.add_log(log_row(run_id, "load", "l3 again", idx=3))
        store.add_log(log_row(run_id, "loader", "not load"))
        store.add_log(log_row(other, "load", "other run", idx=3))
    messages = [line["message"] for line in read(db_path, queries.get_logs, run_id)]
    assert messages == ["e1", "l3", "l0", "l3 again", "not load"]
    by_task = [line["message"] for line in read(db_path, queries.get_logs, run_id, "load")]
    assert by_task == ["l3", "l0", "l3 again"]
    by_instance = read(db_path, queries.get_logs, run_id, "load[3]")
    assert [(x["name"], x["idx"], x["message"]) for x in by_instance] == [
        ("load", 3, "l3"),
        ("load", 3, "l3 again"),
    ]
    assert read(db_path, queries.get_logs, run_id, "load[7]") == []
    assert read(db_path, queries.get_logs, run_id, "nope") == []


@pytest.mark.parametrize("task", ["load[x]", "load[3", "load[-1]", "[3]", "load[3]x"])
async def test_get_logs_rejects_a_malformed_task(db_path: Path, task: str) -> None:
    async with open_store(db_path) as store:
        run_id = await new_run(store)
    with pytest.raises(ParamError, match="NAME"):
        read(db_path, queries.get_logs, run_id, task)


async def test_unknown_run_is_run_not_found(db_path: Path) -> None:
    async with open_store(db_path) as store:
        await new_run(store)
    with pytest.raises(RunNotFoundError, match="run 42 not found"):
        read(db_path, queries.get_run, 42)
    with pytest.raises(RunNotFoundError) as info:
        read(db_path, queries.get_logs, 42)
    assert info.value.run_id == 42


async def test_store_read_runs_queries_off_the_loop(db_path: Path) -> None:
    async with open_store(db_path) as store:
        run_id = await new_run(store, flow="etl")
        runs = await store.read(queries.list_runs, "etl")
        with pytest.raises(RunNotFoundError):
            await store.read(queries.get_run, run_id + 1)
    assert [r["id"] for r in runs] == [run_id]
    assert runs[0]["state"] == "queued"
