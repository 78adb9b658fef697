"""The actions and the log search through the HTTP API in process: a real aiohttp server on
127.0.0.1 over a real SQLite store with runs the engine really ran, and a real client. The
run queue does not run here (runs stay queued); tests/service/test_api_actions_served.py
has the service executing what the actions asked for."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from runtime import Flow, Run, every
from runtime.engine.events import Event, RunEnded
from runtime.engine.runner import Runner
from tests.conftest import MakeRunner
from tests.service.api_server import Api, open_api
from tests.service.test_api import assert_error, db_rows, post

SHAKY = Flow("shaky", params={"region": "eu"})
DAILY = Flow("daily", triggers=[every("1d")], tz="UTC")
MINUTELY = Flow("minutely", triggers=[every("1m")])
PLAIN = Flow("plain")


@SHAKY.task
def extract(run: Run) -> int:
    run.log.info("extracted 300 rows from warehouse")
    return 300


@SHAKY.task
def load(run: Run, extract: int) -> None:
    run.log.warning("warehouse connection slow")
    if run.params["region"] == "eu":
        raise RuntimeError("connection refused by warehouse")


@DAILY.task
def daily_task() -> None:
    """Nothing to do."""


@PLAIN.task
def plain_task() -> None:
    """Nothing to do."""


@MINUTELY.task
def minutely_task() -> None:
    """Nothing to do."""


FLOWS = {flow.name: flow for flow in (SHAKY, DAILY, PLAIN, MINUTELY)}


async def get(api: Api, path: str, *, auth: bool = True) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(api.url + path, headers=api.headers if auth else {}) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def failed_run(runner: Runner) -> int:
    result = await runner.run(SHAKY)
    assert str(result.state) == "failed"
    await runner.store.flush()
    return result.id


async def queued_run(runner: Runner, flow: Flow = PLAIN) -> int:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    run_id, _ = await runner.store.create_run(
        flow=flow.name, params={}, trigger={"kind": "manual"}, logical_date=now, created_at=now
    )
    return run_id


# --- log search ---


async def test_search_finds_lines_across_runs_newest_first(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        first, second = await failed_run(runner), await failed_run(runner)
        status, found = await get(api, "/api/logs/search?q=warehouse+connection")
        status_one, in_run = await get(api, f"/api/logs/search?q=refused&run={first}")
        status_level, errors = await get(api, "/api/logs/search?q=warehouse&level=error&limit=1")
    assert status == status_one == status_level == 200
    assert [(h["run_id"], h["task"]) for h in found["hits"]] == [
        (second, "load"),  # the error line
        (second, "load"),  # the warning
        (first, "load"),
        (first, "load"),
    ]
    assert found["next_cursor"] is None
    assert "\x02connection\x03" in found["hits"][0]["snippet"]
    assert [h["run_id"] for h in in_run["hits"]] == [first]
    assert in_run["hits"][0]["flow"] == "shaky"
    assert len(errors["hits"]) == 1
    assert errors["hits"][0]["level"] == "ERROR"
    assert errors["next_cursor"] is not None
    status, _rest = await _page(make_runner, errors["next_cursor"])
    assert status == 200


async def _page(make_runner: MakeRunner, cursor: str) -> tuple[int, Any]:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, found = await get(api, f"/api/logs/search?q=warehouse&level=error&cursor={cursor}")
    assert [h["level"] for h in found["hits"]] == ["ERROR"]
    assert found["next_cursor"] is None
    return status, found


@pytest.mark.parametrize(
    ("query", "field", "words"),
    [
        ("", "q", "q is required"),
        ("?q=---", "q", "no word"),
        ("?q=a&limit=0", "limit", "from 1 to 200"),
        ("?q=a&limit=many", "limit", "whole number"),
        ("?q=a&cursor=-3", "cursor", "at least 1"),
        ("?q=a&level=loud", "level", "expected one of"),
        ("?q=a&since=yesterday", "since", "ISO 8601"),
        ("?q=a&task=a[b", "task", "NAME[INDEX]"),
        ("?q=a&colour=red", "colour", "unknown parameter"),
    ],
    ids=["no-q", "no-word", "limit-0", "limit-text", "cursor", "level", "since", "task", "unknown"],
)
async def test_a_bad_search_is_a_400_naming_the_parameter(
    make_runner: MakeRunner, query: str, field: str, words: str
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer = await get(api, "/api/logs/search" + query)
        healthy, _ = await get(api, "/api/logs/search?q=anything")
    assert status == 400
    assert_error(answer, "bad_request", field, words)
    assert healthy == 200


async def test_search_needs_the_token(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer = await get(api, "/api/logs/search?q=x", auth=False)
    assert status == 401
    assert_error(answer, "unauthorized", None)


# --- cancel ---


async def test_cancel_a_queued_run_ends_it_and_an_ended_run_is_left_alone(
    make_runner: MakeRunner, db_path: Path, events: list[Event]
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        queued, ended = await queued_run(runner), await failed_run(runner)
        status, answer, _ = await post(api, f"/api/runs/{queued}/cancel")
        status_ended, answer_ended, _ = await post(api, f"/api/runs/{ended}/cancel", {})
    assert status == status_ended == 200
    assert answer == {"run_id": queued, "outcome": "cancelled", "state": "cancelled"}
    assert answer_ended == {"run_id": ended, "outcome": "ended", "state": "failed"}
    assert db_rows(db_path, "SELECT state FROM runs WHERE id = ?", queued) == [("cancelled",)]
    ended_events = [e for e in events if isinstance(e, RunEnded) and e.run_id == queued]
    assert [(e.flow, e.state) for e in ended_events] == [
        ("plain", "cancelled")
    ]  # live pages see it


async def test_cancel_of_a_running_run_is_requested_and_wakes_the_queue(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        run_id = await queued_run(runner)
        await runner.store.claim_runs([run_id], runner.epoch, datetime.now(UTC))
        woken = api.ctx.queue_changed
        status, answer, _ = await post(api, f"/api/runs/{run_id}/cancel")
    assert status == 200
    assert answer == {"run_id": run_id, "outcome": "requested", "state": "running"}
    assert woken.is_set()
    assert db_rows(db_path, "SELECT cancel_requested FROM runs WHERE id = ?", run_id) == [(1,)]


@pytest.mark.parametrize(
    ("path", "body", "status", "code", "field"),
    [
        ("/api/runs/999/cancel", None, 404, "unknown_run", "run_id"),
        ("/api/runs/abc/cancel", None, 400, "bad_request", "run_id"),
        ("/api/runs/0/cancel", None, 400, "bad_request", "run_id"),
        ("/api/runs/1/cancel", {"force": True}, 400, "bad_request", "force"),
        ("/api/runs/1/cancel", [1], 400, "bad_request", "body"),
    ],
    ids=["unknown", "text", "zero", "unknown-field", "not-an-object"],
)
async def test_a_bad_cancel(
    make_runner: MakeRunner, path: str, body: Any, status: int, code: str, field: str
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        await queued_run(runner)
        got, answer, _ = await post(api, path, body)
    assert got == status
    assert_error(answer, code, field)


# --- retry ---


async def test_retry_queues_a_run_that_retries_the_failed_one(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        failed = await failed_run(runner)
        status, run, _ = await post(api, f"/api/runs/{failed}/retry")
        again, answer, _ = await post(api, f"/api/runs/{failed}/retry")
    assert status == 201
    assert run["retry_of"] == failed
    assert run["state"] == "queued"
    assert run["flow"] == "shaky"
    assert run["trigger"] == {"kind": "retry", "run_id": failed, "via": "api"}
    assert run["params"] == {"region": "eu"}
    assert again == 409  # a second click while the first retry waits runs nothing twice
    assert_error(answer, "conflict", "run_id", f"being retried already by run {run['id']}")
    assert db_rows(db_path, "SELECT count(*) FROM runs WHERE retry_of = ?", failed) == [(1,)]


async def test_retry_with_the_same_key_answers_with_the_same_run(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        failed = await failed_run(runner)
        body = {"idempotency_key": "k1"}
        status, first, _ = await post(api, f"/api/runs/{failed}/retry", body)
        again, second, _ = await post(api, f"/api/runs/{failed}/retry", body)
    assert (status, again) == (201, 200)
    assert first["id"] == second["id"]


@pytest.mark.parametrize(
    ("make", "status", "code", "words"),
    [
        ("queued", 409, "conflict", "is still queued"),
        ("succeeded", 409, "conflict", "nothing to retry"),
        ("unknown", 404, "unknown_run", "no run 999"),
    ],
    ids=["not-ended", "succeeded", "unknown"],
)
async def test_retry_refuses_what_cannot_be_retried(
    make_runner: MakeRunner, db_path: Path, make: str, status: int, code: str, words: str
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        if make == "queued":
            run_id = await queued_run(runner)
        elif make == "succeeded":
            run_id = (await runner.run(PLAIN)).id
        else:
            run_id = 999
        before = db_rows(db_path, "SELECT count(*) FROM runs")
        got, answer, _ = await post(api, f"/api/runs/{run_id}/retry")
        assert db_rows(db_path, "SELECT count(*) FROM runs") == before
    assert got == status
    assert_error(answer, code, "run_id", words)


async def test_retry_refuses_a_bad_body(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        failed = await failed_run(runner)
        key, answer_key, _ = await post(api, f"/api/runs/{failed}/retry", {"idempotency_key": 3})
        field, answer_field, _ = await post(api, f"/api/runs/{failed}/retry", {"tasks": ["a"]})
        raw, answer_raw, _ = await post(api, f"/api/runs/{failed}/retry", data=b"{nope")
    assert key == field == raw == 400
    assert_error(answer_key, "bad_request", "idempotency_key")
    assert_error(answer_field, "bad_request", "tasks")
    assert_error(answer_raw, "bad_request", "body")


# --- pause, unpause ---


async def test_pause_and_unpause_persist_and_unpause_wakes_the_scheduler(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, paused, _ = await post(api, "/api/flows/daily/pause")
        _, twice, _ = await post(api, "/api/flows/daily/pause")
        assert db_rows(db_path, "SELECT flow FROM paused") == [("daily",)]
        schedule, queue = api.ctx.schedule_changed, api.ctx.queue_changed
        status_un, unpaused, _ = await post(api, "/api/flows/daily/unpause", {})
    assert status == status_un == 200
    assert paused == {"flow": "daily", "paused": True, "changed": True}
    assert twice == {"flow": "daily", "paused": True, "changed": False}
    assert unpaused == {"flow": "daily", "paused": False, "changed": True}
    assert schedule.is_set()
    assert queue.is_set()
    assert db_rows(db_path, "SELECT flow FROM paused") == []


async def test_pause_of_an_unknown_flow_is_a_404(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, "/api/flows/nope/pause")
        get_status, _, _ = await post(api, "/api/flows/daily/pause", {"why": "x"})
    assert status == 404
    assert_error(answer, "unknown_flow", "flow", "loaded flows: daily, minutely, plain, shaky")
    assert get_status == 400


# --- backfill ---


async def test_backfill_dry_run_lists_and_writes_nothing(
    make_runner: MakeRunner, db_path: Path
) -> None:
    body = {"start": "2026-11-01", "end": "2026-11-03", "dry_run": True}
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, "/api/flows/daily/backfill", body)
    assert status == 200
    assert [(r["logical_date"], r["action"], r["run"]) for r in answer["runs"]] == [
        ("2026-11-01T00:00:00Z", "run", None),
        ("2026-11-02T00:00:00Z", "run", None),
        ("2026-11-03T00:00:00Z", "run", None),
    ]
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(0,)]


async def test_backfill_queues_once_per_instant(make_runner: MakeRunner, db_path: Path) -> None:
    body = {"start": "2026-11-01", "end": "2026-11-02"}
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, made, _ = await post(api, "/api/flows/daily/backfill", body)
        again, same, _ = await post(api, "/api/flows/daily/backfill", body)
        wider, more, _ = await post(api, "/api/flows/daily/backfill", {**body, "end": "2026-11-03"})
    assert (status, again, wider) == (201, 200, 201)
    assert [(r["state"], r["action"], r["logical_date"]) for r in made["runs"]] == [
        ("queued", "run", "2026-11-01T00:00:00Z"),
        ("queued", "run", "2026-11-02T00:00:00Z"),
    ]
    assert made["runs"][0]["trigger"]["via"] == "api"
    assert same == {"flow": "daily", "runs": [], "skipped": 2}
    assert [r["logical_date"] for r in more["runs"]] == ["2026-11-03T00:00:00Z"]
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(3,)]


@pytest.mark.parametrize(
    ("flow", "body", "status", "field", "words"),
    [
        ("daily", {"end": "2026-11-02"}, 400, "start", "start is required"),
        ("daily", {"start": "2026-11-01"}, 400, "end", "end is required"),
        ("daily", {"start": "soon", "end": "2026-11-02"}, 400, "start", "not a date"),
        ("daily", {"start": "2026-11-05", "end": "2026-11-02"}, 400, "end", "is after"),
        ("daily", {"start": "2026-11-01", "end": "2026-11-02", "rerun": "x"}, 400, "rerun", ""),
        ("daily", {"start": "2026-11-01", "end": "2026-11-02", "dry_run": "y"}, 400, "dry_run", ""),
        ("daily", {"start": "2026-11-01", "end": "2026-11-02", "max": 1}, 400, "max", "unknown"),
        ("minutely", {"start": "1900-01-01", "end": "2026-11-02"}, 400, "end", "more than 10000"),
        ("plain", {"start": "2026-11-01", "end": "2026-11-02"}, 400, "flow", "no time triggers"),
        ("nope", {"start": "2026-11-01", "end": "2026-11-02"}, 404, "flow", "unknown flow"),
    ],
    ids=[
        "no-start", "no-end", "bad-start", "reversed", "rerun", "dry-run", "unknown-field",
        "too-long", "unscheduled", "unknown-flow",
    ],
)  # fmt: skip
async def test_a_bad_backfill_names_the_field_and_queues_nothing(
    make_runner: MakeRunner,
    db_path: Path,
    flow: str,
    body: dict[str, Any],
    status: int,
    field: str,
    words: str,
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        got, answer, _ = await post(api, f"/api/flows/{flow}/backfill", body)
    assert got == status, answer
    assert answer["error"]["field"] == field
    assert words in answer["error"]["message"]
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(0,)]


async def test_backfill_rerun_failed_retries_the_failed_instants(
    make_runner: MakeRunner, db_path: Path
) -> None:
    body = {"start": "2026-11-01", "end": "2026-11-01"}
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        _, made, _ = await post(api, "/api/flows/daily/backfill", body)
        run_id = made["runs"][0]["id"]
        await runner.store.writer.submit(
            lambda db: db.execute("UPDATE runs SET state = 'failed' WHERE id = ?", (run_id,))
        )
        status, dry, _ = await post(
            api, "/api/flows/daily/backfill", {**body, "rerun": "failed", "dry_run": True}
        )
        status_real, real, _ = await post(
            api, "/api/flows/daily/backfill", {**body, "rerun": "failed"}
        )
    assert (status, status_real) == (200, 201)
    assert [(r["action"], r["run"]) for r in dry["runs"]] == [
        ("retry", {"id": run_id, "state": "failed"})
    ]
    assert [(r["action"], r["retry_of"]) for r in real["runs"]] == [("retry", run_id)]
    assert orjson.loads(orjson.dumps(real["runs"][0]["trigger"])) == {
        "kind": "retry",
        "run_id": run_id,
    }


async def test_retry_of_a_flow_the_service_has_not_loaded_is_a_conflict(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner() as runner:
        failed = await failed_run(runner)
        async with open_api(runner, {"plain": PLAIN}) as api:
            status, answer, _ = await post(api, f"/api/runs/{failed}/retry")
    assert status == 409
    assert_error(answer, "conflict", "run_id", "flow 'shaky'", "not loaded")
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(1,)]
