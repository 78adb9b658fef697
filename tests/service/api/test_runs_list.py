"""``GET /api/runs`` over a generated history: the runs --json shape, every filter against the
same question asked in plain SQL, keyset pages that stay exact while runs are queued between
them, and a 400 naming the parameter for every bad value."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from history import History

from runtime.service.api.browse import ROUTES
from runtime.store import connect_reader, queries
from tests.conftest import MakeRunner
from tests.service.api.client import Query, get, schema_problems
from tests.service.api.conftest import FLOWS, sql
from tests.service.api_server import Api, open_api
from tests.service.test_api import assert_error, post

DOC = {route.name: route.doc for route in ROUTES}
RUNS_SCHEMA = DOC["list_runs"]["responses"]["200"]["content"]["application/json"]["schema"]
KIND = "json_extract(trigger, '$.kind')"


async def walk(api: Api, query: list[tuple[str, str]], limit: int) -> list[int]:
    """Every run id the filter gives, page after page (each page checked on the way)."""
    ids: list[int] = []
    cursor: str | None = None
    for _ in range(1000):
        page = [*query, ("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
        status, answer = await get(api, "/api/runs", page)
        assert status == 200, answer
        assert schema_problems(answer, RUNS_SCHEMA) == []
        assert len(answer["runs"]) <= limit
        ids += [run["id"] for run in answer["runs"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            return ids
        assert len(answer["runs"]) == limit  # a page before the last is full
    raise AssertionError("more than 1000 pages")


async def test_the_first_page_is_the_newest_runs_in_the_runs_json_shape(
    make_runner: MakeRunner, history: History
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer = await get(api, "/api/runs")
    conn = connect_reader(history.path)
    try:
        expected = queries.list_runs(conn, limit=50)
    finally:
        conn.close()
    assert status == 200
    assert answer["runs"] == expected  # exactly `sluiceway runs --json`
    assert [run["id"] for run in answer["runs"]] == list(range(400, 350, -1))
    assert base64.urlsafe_b64decode(answer["next_cursor"] + "==") == b"351"
    assert schema_problems(answer, RUNS_SCHEMA) == []


FILTERS: list[tuple[str, list[tuple[str, str]], str, tuple[Any, ...]]] = [
    ("flow", [("flow", "billing")], "flow = ?", ("billing",)),
    ("flows", [("flow", "billing,clickstream")], "flow IN (?, ?)", ("billing", "clickstream")),
    ("state", [("state", "failed")], "state = ?", ("failed",)),
    (
        "states-repeated",
        [("state", "failed"), ("state", "cancelled")],
        "state IN (?, ?)",
        ("failed", "cancelled"),
    ),
    (
        "flow-and-states",
        [("flow", "orders"), ("state", "succeeded,queued")],
        "flow = ? AND state IN (?, ?)",
        ("orders", "succeeded", "queued"),
    ),
    ("trigger", [("trigger", "backfill")], f"{KIND} = ?", ("backfill",)),
    (
        "triggers",
        [("trigger", "event,manual,api")],
        f"{KIND} IN (?, ?, ?)",
        ("event", "manual", "api"),
    ),
    (
        "cron",
        [("trigger", "cron")],
        f"{KIND} = 'schedule' AND json_extract(trigger, '$.spec') LIKE ?",
        ("cron(%",),
    ),
    (
        "every-and-file",
        [("trigger", "every"), ("trigger", "file")],
        f"(({KIND} = 'schedule' AND json_extract(trigger, '$.spec') LIKE ?) OR {KIND} = ?)",
        ("every(%", "file"),
    ),
    ("schedule-covers-cron", [("trigger", "schedule,cron")], f"{KIND} = ?", ("schedule",)),
    (
        "flow-and-trigger",
        [("flow", "billing"), ("trigger", "retry")],
        f"flow = ? AND {KIND} = ?",
        ("billing", "retry"),
    ),
    (
        "state-and-trigger",
        [("state", "succeeded"), ("trigger", "flow,event")],
        f"state = ? AND {KIND} IN (?, ?)",
        ("succeeded", "flow", "event"),
    ),
    (
        "since-until",
        [("since", "2025-11-20"), ("until", "2025-12-01T06:30:00Z")],
        "julianday(created_at) >= julianday(?) AND julianday(created_at) < julianday(?)",
        ("2025-11-20T00:00:00", "2025-12-01T06:30:00"),
    ),
    (
        "since-with-offset",
        [("since", "2025-12-20T02:00:00+02:00")],
        "julianday(created_at) >= julianday(?)",
        ("2025-12-20T00:00:00",),
    ),
    (
        "logical-date",
        [("until", "2025-11-01"), ("date_field", "logical_date")],
        "julianday(logical_date) < julianday(?)",
        ("2025-11-01T00:00:00",),
    ),
    (
        "all-at-once",
        [
            ("flow", "orders,billing"),
            ("state", "succeeded"),
            ("trigger", "schedule"),
            ("since", "2025-12-01"),
        ],
        f"flow IN (?, ?) AND state = ? AND {KIND} = ? AND julianday(created_at) >= julianday(?)",
        ("orders", "billing", "succeeded", "schedule", "2025-12-01T00:00:00"),
    ),
    ("unknown-flow", [("flow", "gone")], "flow = ?", ("gone",)),
]


@pytest.mark.parametrize(
    ("query", "where", "args"), [f[1:] for f in FILTERS], ids=[f[0] for f in FILTERS]
)
async def test_every_filter_gives_what_sql_gives_newest_first(
    make_runner: MakeRunner,
    history: History,
    query: list[tuple[str, str]],
    where: str,
    args: tuple[Any, ...],
) -> None:
    expected = sql(history.path, f"SELECT id FROM runs WHERE {where} ORDER BY id DESC", *args)
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        found = await walk(api, query, limit=37)
    assert found == expected
    if query[0][0] != "flow" or query[0][1] != "gone":
        assert expected, "the history should hold runs for this filter"


async def test_pages_walk_every_run_once_while_runs_are_queued_between_them(
    make_runner: MakeRunner, history: History
) -> None:
    before = sql(history.path, "SELECT id FROM runs WHERE flow = 'orders' ORDER BY id DESC")
    found: list[int] = []
    added: list[int] = []
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        cursor: str | None = None
        while True:
            query: list[tuple[str, str]] = [("flow", "orders"), ("limit", "25")]
            status, answer = await get(
                api, "/api/runs", query + ([("cursor", cursor)] if cursor else [])
            )
            assert status == 200, answer
            found += [run["id"] for run in answer["runs"]]
            # a new run of the same flow queued between two pages: above every cursor
            posted, run, _ = await post(api, "/api/flows/orders/runs", {})
            assert posted == 201, run
            added.append(run["id"])
            cursor = answer["next_cursor"]
            if cursor is None:
                break
        _, first = await get(api, "/api/runs", {"flow": "orders", "limit": "500"})
    assert found == before  # each run once, in order, none of the new ones
    assert len(set(found)) == len(found)
    assert [run["id"] for run in first["runs"]][: len(added)] == added[::-1]


BAD: list[tuple[str, Query, str, str]] = [
    ("limit-zero", {"limit": "0"}, "limit", "between 1 and 500"),
    ("limit-big", {"limit": "501"}, "limit", "between 1 and 500"),
    ("limit-text", {"limit": "ten"}, "limit", "must be an integer"),
    ("limit-twice", [("limit", "5"), ("limit", "6")], "limit", "given 2 times"),
    ("state", {"state": "done"}, "state", "'done' is not one of"),
    ("state-empty-item", {"state": "failed,"}, "state", "empty value"),
    ("trigger", {"trigger": "cronjob"}, "trigger", "'cronjob' is not one of"),
    ("since", {"since": "yesterday"}, "since", "ISO date"),
    ("until", {"until": "2025-13-01"}, "until", "ISO date"),
    ("order", {"since": "2025-12-02", "until": "2025-12-01"}, "until", "after since"),
    ("date-field", {"date_field": "ended_at"}, "date_field", "created_at or logical_date"),
    ("cursor", {"cursor": "not a cursor!"}, "cursor", "not a cursor this API gave"),
    ("cursor-text", {"cursor": base64.b64encode(b"abc").decode()}, "cursor", "next_cursor"),
    ("cursor-zero", {"cursor": "MA"}, "cursor", "next_cursor"),
    ("unknown", {"stat": "failed"}, "stat", "unknown query parameter 'stat'"),
    ("empty-flow", {"flow": ""}, "flow", "empty value"),
    ("many-flows", {"flow": ",".join(f"f{i}" for i in range(51))}, "flow", "at most 50"),
    (
        "many-branches",
        {
            "flow": ",".join(f"f{i}" for i in range(50)),
            "trigger": "manual,api,event,file,flow,backfill,retry,cron,every",
        },
        "flow",
        "at most 400",
    ),
]


@pytest.mark.parametrize(
    ("query", "field", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
async def test_a_bad_parameter_is_a_400_naming_it(
    make_runner: MakeRunner, history: History, query: Query, field: str, message: str
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer = await get(api, "/api/runs", query)
        # the service stays up and answers the next request
        after, _ = await get(api, "/api/runs", {"limit": "1"})
    assert status == 400
    assert_error(answer, "bad_request", field, message)
    assert after == 200


@pytest.mark.parametrize(
    "path", ["/api/runs", "/api/runs/1", "/api/runs/1/logs", "/api/flows", "/api/flows/orders"]
)
async def test_every_read_route_needs_the_token(
    make_runner: MakeRunner, history: History, path: str
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer = await get(api, path, auth=False)
    assert status == 401
    assert_error(answer, "unauthorized", None, "bearer token")


def test_every_read_route_documents_its_parameters_and_answers() -> None:
    for route in ROUTES:
        documented = {p["name"] for p in route.doc.get("parameters", []) if p["in"] == "path"}
        in_path = {part[1:-1] for part in route.path.split("/") if part.startswith("{")}
        assert documented == in_path, route.name
        responses = route.doc["responses"]
        assert {"200", "401"} <= set(responses), route.name
        assert responses["200"]["content"]["application/json"]["schema"]["type"] == "object"
        for param in route.doc.get("parameters", []):
            assert param["schema"], (route.name, param["name"])
            assert param["description"], (route.name, param["name"])
