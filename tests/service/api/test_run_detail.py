"""``GET /api/runs/{run_id}``, ``/api/runs/{run_id}/logs``, ``/api/flows`` and
``/api/flows/{flow}`` over a generated history: each part against the rows it comes from."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from history import History

from runtime.service.api.browse import ROUTES
from runtime.store import connect_reader, queries
from tests.conftest import MakeRunner
from tests.service.api.client import get, schema_problems
from tests.service.api.conftest import FLOWS, NOW, sql
from tests.service.api_server import open_api
from tests.service.test_api import assert_error, post

SCHEMAS = {
    route.name: route.doc["responses"]["200"]["content"]["application/json"]["schema"]
    for route in ROUTES
}


async def _run(make_runner: MakeRunner, run_id: int | str) -> tuple[int, Any]:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        return await get(api, f"/api/runs/{run_id}")


async def test_a_failed_run_has_its_attempts_tracebacks_mapped_counts_and_alerts(
    make_runner: MakeRunner, history: History
) -> None:
    db = history.path
    run_id = sql(
        db,
        "SELECT r.id FROM runs r WHERE r.state = 'failed' AND EXISTS (SELECT 1 FROM outbox o "
        "WHERE o.run_id = r.id AND o.state = 'dead') ORDER BY r.id DESC LIMIT 1",
    )[0]
    status, run = await _run(make_runner, run_id)
    assert status == 200, run
    assert schema_problems(run, SCHEMAS["get_run"]) == []
    conn = connect_reader(db)
    try:
        shown = queries.get_run(conn, run_id)
    finally:
        conn.close()
    assert {k: run[k] for k in shown} == shown  # `sluiceway show --json`, plus more
    attempts = sql(
        db,
        "SELECT name, idx, attempt, state, traceback FROM attempts WHERE run_id = ? "
        "ORDER BY started_at",
        run_id,
    )
    assert [(a["name"], a["index"] if a["index"] is not None else -1, a["attempt"], a["state"])
            for a in run["attempts"]] == [a[:4] for a in attempts]  # fmt: skip
    failed = [a for a in run["attempts"] if a["state"] == "failed"]
    assert failed, run["attempts"]
    for attempt in failed:
        assert attempt["traceback"].startswith("Traceback (most recent call last)")
        assert attempt["traceback"].endswith(f"{attempt['error_type']}: {attempt['error_message']}")
        assert attempt["duration"] > 0
    assert all(a["task"] == (f"load[{a['index']}]" if a["name"] == "load" else a["name"])
               for a in run["attempts"])  # fmt: skip
    instances = sql(db, "SELECT state FROM tasks WHERE run_id = ? AND idx >= 0", run_id)
    assert run["mapped"]["load"]["total"] == len(instances) == 5
    assert sum(n for k, n in run["mapped"]["load"].items() if k != "total") == 5
    outbox = sql(db, "SELECT id, state, attempts, last_error FROM outbox WHERE run_id = ?", run_id)
    assert [(a["id"], a["state"], a["tries"], a["last_error"]) for a in run["alerts"]] == outbox
    dead = [a for a in run["alerts"] if a["state"] == "dead"]
    assert dead, run["alerts"]
    assert dead[0]["sent_at"] is None
    assert dead[0]["last_error"]
    assert not {"payload", "answer"} & set(run["alerts"][0])
    assert run["waiting"] == []  # an ended run waits for nothing


async def test_a_run_with_an_sla_miss_lists_it(make_runner: MakeRunner, history: History) -> None:
    run_id, ts = sql(
        history.path,
        "SELECT run_id, ts FROM events WHERE kind = 'sla.missed' ORDER BY id LIMIT 1",
    )[0]
    status, run = await _run(make_runner, run_id)
    assert status == 200
    assert [(e["kind"], e["ts"]) for e in run["sla_events"]] == [("sla.missed", ts)]
    assert run["sla_events"][0]["sla"] == 1800
    assert run["sla_missed"] is True


async def test_a_queued_run_of_a_paused_flow_says_why_it_waits(
    make_runner: MakeRunner, history: History
) -> None:
    queued = sql(
        history.path,
        "SELECT id FROM runs WHERE state = 'queued' AND flow = 'clickstream' ORDER BY id",
    )
    assert len(queued) >= 2
    status, run = await _run(make_runner, queued[-1])
    assert status == 200
    texts = [item["text"] for item in run["waiting"]]
    assert any("flow 'clickstream' is paused" in text for text in texts), texts
    ahead = len(queued) - 1
    assert any(f"{ahead} queued run" in text for text in texts), texts
    assert (run["attempts"], run["tasks"]) == ([], [])


async def test_a_running_run_says_which_task_waits_to_retry_and_which_for_a_slot(
    make_runner: MakeRunner, history: History
) -> None:
    task, idx, at = sql(
        history.path,
        "SELECT t.name, t.idx, t.next_attempt_at FROM tasks t JOIN runs r ON r.id = t.run_id "
        "WHERE r.state = 'running' AND t.state = 'retrying'",
    )[0]
    run_id = sql(history.path, "SELECT run_id FROM tasks WHERE state = 'retrying'")[0]
    status, run = await _run(make_runner, run_id)
    assert status == 200
    label = f"{task}[{idx}]" if idx >= 0 else task
    retry = [item for item in run["waiting"] if item["task"] == label]
    assert retry, run["waiting"]
    assert retry[0]["until"] == at
    assert f"task {label} waits to retry at {at}" in retry[0]["text"]
    assert "attempt 1 failed" in retry[0]["text"]
    slots = [item for item in run["waiting"] if "pool 'warehouse'" in item["text"]]
    assert slots, run["waiting"]


async def test_a_running_run_left_by_a_stopped_service_says_it_waits_for_its_flow(
    make_runner: MakeRunner, history: History
) -> None:
    run_id = sql(history.path, "SELECT MAX(id) FROM runs WHERE state = 'running'")[0]
    reason = "waiting: flow 'gone' is not loaded"  # as recovery writes it
    conn = sqlite3.connect(history.path)
    with conn:
        conn.execute("UPDATE runs SET wait_reason = ? WHERE id = ?", (reason, run_id))
    conn.close()
    status, run = await _run(make_runner, run_id)
    assert status == 200
    assert {"task": None, "text": reason, "until": None} in run["waiting"]


@pytest.mark.parametrize(
    ("run_id", "status", "code", "field"),
    [(99999, 404, "run_not_found", "run_id"), ("abc", 400, "bad_request", "run_id"),
     (0, 400, "bad_request", "run_id"), ("1e3", 400, "bad_request", "run_id")],
    ids=["unknown", "text", "zero", "float"],
)  # fmt: skip
async def test_an_unknown_or_malformed_run_id(
    make_runner: MakeRunner, history: History, run_id: Any, status: int, code: str, field: str
) -> None:
    got, answer = await _run(make_runner, run_id)
    assert got == status
    assert_error(answer, code, field, str(run_id))


# --- logs ---


async def _walk_logs(
    make_runner: MakeRunner, run_id: int, limit: int, task: str | None = None
) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        after = "0"
        for _ in range(500):
            query = {"after": after, "limit": str(limit), **({"task": task} if task else {})}
            status, answer = await get(api, f"/api/runs/{run_id}/logs", query)
            assert status == 200, answer
            assert schema_problems(answer, SCHEMAS["run_logs"]) == []
            assert len(answer["lines"]) <= limit
            lines += answer["lines"]
            if answer["next_cursor"] is None:
                return lines
            assert answer["next_cursor"] == str(answer["lines"][-1]["id"])
            after = answer["next_cursor"]
    raise AssertionError("more than 500 pages")


def _busiest_run(history: History) -> int:
    found: int = sql(
        history.path,
        "SELECT run_id FROM logs GROUP BY run_id ORDER BY COUNT(*) DESC, run_id LIMIT 1",
    )[0]
    return found


@pytest.mark.parametrize(
    ("task", "where"),
    [(None, ""), ("load", " AND name = 'load'"), ("load[1]", " AND name = 'load' AND idx = 1"),
     ("extract", " AND name = 'extract'")],
    ids=["all", "mapped-task", "one-instance", "plain-task"],
)  # fmt: skip
async def test_log_pages_give_every_line_once_in_order(
    make_runner: MakeRunner, history: History, task: str | None, where: str
) -> None:
    run_id = _busiest_run(history)
    expected = sql(
        history.path,
        f"SELECT id, name, idx, attempt, ts, level, message FROM logs WHERE run_id = ?{where} "
        "ORDER BY id",
        run_id,
    )
    lines = await _walk_logs(make_runner, run_id, 3, task)
    assert [(x["id"], x["name"], -1 if x["index"] is None else x["index"], x["attempt"],
             x["ts"], x["level"], x["message"]) for x in lines] == expected  # fmt: skip
    assert len(expected) >= 2


@pytest.mark.parametrize(
    ("path", "query", "status", "field", "message"),
    [
        ("/api/runs/{run}/logs", {"task": "load[x"}, 400, "task", "NAME or NAME[INDEX]"),
        ("/api/runs/{run}/logs", {"after": "-1"}, 400, "after", "between 0 and"),
        ("/api/runs/{run}/logs", {"limit": "5001"}, 400, "limit", "between 1 and 5000"),
        ("/api/runs/{run}/logs", {"level": "ERROR"}, 400, "level", "unknown query parameter"),
        ("/api/runs/99999/logs", {}, 404, "run_id", "no run 99999"),
    ],
    ids=["task", "after", "limit", "unknown", "no-run"],
)
async def test_bad_log_requests(
    make_runner: MakeRunner,
    history: History,
    path: str,
    query: dict[str, str],
    status: int,
    field: str,
    message: str,
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        got, answer = await get(api, path.format(run=_busiest_run(history)), query)
    assert got == status
    assert_error(answer, "run_not_found" if status == 404 else "bad_request", field, message)


# --- flows ---


def _flow_rows(db: Path, name: str) -> dict[str, Any]:
    """What the flow object's store parts should be, asked in plain SQL."""
    since = (NOW - timedelta(hours=24)).strftime("%Y-%m-%dT%H:%M:%S")
    return {
        "last": sql(
            db, "SELECT id, state FROM runs WHERE flow = ? ORDER BY id DESC LIMIT 20", name
        ),
        "runs": sql(db, "SELECT COUNT(*) FROM runs WHERE flow = ?", name)[0],
        **{
            state: sql(db, "SELECT COUNT(*) FROM runs WHERE flow = ? AND state = ?", name, state)[0]
            for state in ("running", "queued")
        },
        "sla_misses": sql(
            db,
            "SELECT COUNT(*) FROM events e JOIN runs r ON r.id = e.run_id "
            "WHERE e.kind = 'sla.missed' AND julianday(e.ts) >= julianday(?) AND r.flow = ?",
            since,
            name,
        )[0],
    }


async def test_flows_have_their_overview_last_runs_counts_and_sla_misses(
    make_runner: MakeRunner, history: History
) -> None:
    expected = {name: _flow_rows(history.path, name) for name in FLOWS}
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer = await get(api, "/api/flows")
        one_status, one = await get(api, "/api/flows/billing")
        # runs queued since are counted (the counts are kept, not recounted in full)
        for _ in range(2):
            posted, run, _ = await post(api, "/api/flows/orders/runs", {})
            assert posted == 201, run
        _, orders = await get(api, "/api/flows/orders")
    assert status == one_status == 200
    assert schema_problems(answer, SCHEMAS["list_flows"]) == []
    flows = {flow["name"]: flow for flow in answer["flows"]}
    assert list(flows) == sorted(FLOWS)
    assert one == flows["billing"]
    for name, flow in flows.items():
        want = expected[name]
        assert [(r["id"], r["state"]) for r in flow["last_runs"]] == want["last"]
        assert (flow["runs"], flow["running"], flow["queued"], flow["sla_misses"]) == (
            want["runs"], want["running"], want["queued"], want["sla_misses"]
        )  # fmt: skip
        assert flow["paused"] is (name == "clickstream")
    assert orders["runs"] == flows["orders"]["runs"] + 2
    assert orders["queued"] == flows["orders"]["queued"] + 2
    assert orders["last_runs"][0]["id"] == run["id"]
    assert sum(flow["sla_misses"] for flow in flows.values()) > 0
    assert flows["orders"]["schedule"] == "Every hour"
    assert flows["orders"]["next_runs"][0] == "2026-01-01T01:00:00Z"
    assert flows["billing"]["triggers"][0]["words"] == "Every 15 minutes"
    assert flows["clickstream"]["paused_at"] is not None


async def test_an_unknown_flow_is_a_404_naming_the_loaded_ones(
    make_runner: MakeRunner, history: History
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer = await get(api, "/api/flows/nope")
    assert status == 404
    assert_error(answer, "unknown_flow", "flow", "'nope'", "billing, clickstream, orders")
