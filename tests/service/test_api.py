"""The HTTP API in process: a real aiohttp server on 127.0.0.1 over a real SQLite store, and a
real aiohttp client. Runs, events, auth, idempotency, bad input of every kind, body limits."""

from __future__ import annotations

import io
import logging
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc
import orjson
import pytest

from runtime import Flow, on_event
from runtime.config import Config
from runtime.service.api.listen import ApiSettings, listen
from runtime.service.api.server import ApiServer
from runtime.service.context import ServiceContext
from runtime.store import connect_reader, queries
from tests.conftest import MakeRunner
from tests.service.api_server import TOKEN, Api, open_api

ALPHA = Flow("alpha", triggers=[on_event("landed")], params={"region": "eu", "n": 1})
BETA = Flow("beta", triggers=[on_event("landed"), on_event("other")])
GAMMA = Flow("gamma", triggers=[on_event("other")])
PLAIN = Flow("plain")


def noop() -> None:
    """The one task of each flow (the run queue does not run here: runs stay queued)."""


for _flow in (ALPHA, BETA, GAMMA, PLAIN):
    _flow.task()(noop)
FLOWS = {flow.name: flow for flow in (ALPHA, BETA, GAMMA, PLAIN)}

MIB = 1 << 20


def db_rows(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """*sql* on a connection of its own: what is committed, nothing else."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


async def post(
    api: Api,
    path: str,
    body: Any = None,
    *,
    data: Any = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> tuple[int, Any, aiohttp.ClientResponse]:
    """POST *body* as JSON (or raw *data*) to *path*: (status, JSON answer, response)."""
    sent = {**(api.headers if auth else {}), **(headers or {})}
    if data is None and body is not None:
        data = orjson.dumps(body)
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.url + path, data=data, headers=sent) as resp,
    ):
        answer = await resp.json(content_type=None)
        return resp.status, answer, resp


def assert_error(answer: Any, code: str, field: str | None = None, *parts: str) -> None:
    """The one error shape: ``{"error": {"code", "message", "field"?}}``."""
    assert set(answer) == {"error"}, answer
    error = answer["error"]
    assert error["code"] == code, answer
    assert error.get("field") == field, answer
    assert set(error) <= {"code", "message", "field"}
    for part in parts:
        assert part in error["message"], answer
    assert "Traceback" not in error["message"]


# --- auth ---


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, "missing bearer token"),
        ("Bearer ", "missing bearer token"),
        (f"Basic {TOKEN}", "missing bearer token"),
        ("Bearer wrong-token", "wrong bearer token"),
        (f"Bearer {TOKEN}x", "wrong bearer token"),
    ],
    ids=["missing", "empty", "basic", "wrong", "longer"],
)
async def test_a_request_without_the_right_token_is_refused_with_401(
    make_runner: MakeRunner, db_path: Path, header: str | None, message: str
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        headers = {"Authorization": header} if header is not None else {}
        status, answer, resp = await post(
            api, "/api/flows/alpha/runs", {}, headers=headers, auth=False
        )
        status_event, answer_event, _ = await post(
            api, "/api/events/landed", {}, headers=headers, auth=False
        )
    assert status == status_event == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="sluiceway"'
    assert resp.content_type == "application/json"
    assert_error(answer, "unauthorized", None, message)
    assert_error(answer_event, "unauthorized", None, message)
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(0,)]


async def test_the_right_token_is_served_and_healthz_needs_none(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, _, _ = await post(api, "/api/flows/alpha/runs", {})
        async with aiohttp.ClientSession() as session, session.get(api.url + "/healthz") as resp:
            health = (resp.status, await resp.json())
        # an unknown route is a 401 without the token (the API's shape is not shown) ...
        unknown_anon, _, _ = await post(api, "/api/nothing", {}, auth=False)
        # ... and a 404 with it
        unknown, answer, _ = await post(api, "/api/nothing", {})
    assert status == 201
    assert health == (200, {"ok": True})
    assert unknown_anon == 401
    assert unknown == 404
    assert_error(answer, "not_found", None, "POST /api/nothing")


async def test_auth_none_serves_without_a_token(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS, token=None) as api:
        status, answer, _ = await post(api, "/api/flows/alpha/runs", {}, auth=False)
    assert status == 201, answer


# --- runs ---


async def test_a_run_is_answered_in_the_runs_json_shape_once_committed(
    make_runner: MakeRunner, db_path: Path
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, resp = await post(
            api, "/api/flows/alpha/runs", {"params": {"region": "us"}, "idempotency_key": "k1"}
        )
        # read at once, on a connection of our own, while the service still runs
        committed = db_rows(db_path, "SELECT id, state, idempotency_key FROM runs")
        conn = connect_reader(db_path)
        try:
            listed = queries.list_runs(conn)
        finally:
            conn.close()
    assert status == 201
    assert resp.content_type == "application/json"
    assert committed == [(answer["id"], "queued", "k1")]
    assert answer == listed[0]  # exactly one element of `sluiceway runs --json`
    assert answer["flow"] == "alpha"
    assert answer["params"] == {"region": "us", "n": 1}
    assert answer["trigger"] == {"kind": "api", "via": "http", "remote": "127.0.0.1"}


async def test_the_same_idempotency_key_answers_200_with_the_same_run(
    make_runner: MakeRunner, db_path: Path
) -> None:
    body = {"params": {"n": 2}, "idempotency_key": "nightly-2026-11-30"}
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        first = await post(api, "/api/flows/alpha/runs", body)
        second = await post(api, "/api/flows/alpha/runs", body)
        other = await post(api, "/api/flows/alpha/runs", {"idempotency_key": "another"})
    assert (first[0], second[0], other[0]) == (201, 200, 201)
    assert second[1] == first[1]
    assert other[1]["id"] != first[1]["id"]
    assert db_rows(
        db_path, "SELECT count(*) FROM runs WHERE idempotency_key = ?", body["idempotency_key"]
    ) == [(1,)]
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(2,)]


async def test_a_run_without_a_body_gets_the_default_params(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, "/api/flows/alpha/runs")
    assert status == 201
    assert answer["params"] == {"region": "eu", "n": 1}
    assert answer["idempotency_key"] is None


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        (b'{"params": ', "body", "body is not valid JSON"),
        (b"[1, 2]", "body", "body must be a JSON object"),
        (b'"text"', "body", "body must be a JSON object"),
        (b'{"params": [1]}', "params", "params must be a JSON object"),
        (b'{"params": {"zone": "us"}}', "params.zone", "flow 'alpha' has no param 'zone'"),
        (b'{"idempotency_key": 7}', "idempotency_key", "non-empty string"),
        (b'{"idempotency_key": ""}', "idempotency_key", "non-empty string"),
        (b'{"idempotency_key": "' + b"k" * 300 + b'"}', "idempotency_key", "at most 256"),
        (b'{"param": {}}', "param", "unknown field 'param'"),
        (b"\xff\xfe", "body", "body is not valid JSON"),
    ],
    ids=[
        "bad-json",
        "array",
        "string",
        "params-not-object",
        "unknown-param",
        "key-not-string",
        "key-empty",
        "key-too-long",
        "unknown-field",
        "not-utf8",
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    make_runner: MakeRunner, db_path: Path, data: bytes, field: str, message: str
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, resp = await post(api, "/api/flows/alpha/runs", data=data)
    assert status == 400
    assert resp.content_type == "application/json"
    assert_error(answer, "bad_request", field, message)
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(0,)]


async def test_an_unknown_flow_is_a_404_naming_it(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, "/api/flows/nope/runs", {})
    assert status == 404
    assert_error(answer, "unknown_flow", "flow", "unknown flow 'nope'", "alpha, beta")


async def test_a_wrong_method_is_a_405_with_allow(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        open_api(runner, FLOWS) as api,
        aiohttp.ClientSession() as session,
        session.get(api.url + "/api/flows/alpha/runs", headers=api.headers) as resp,
    ):
        status, allow, answer = resp.status, resp.headers.get("Allow"), await resp.json()
    assert (status, allow) == (405, "POST")
    assert_error(answer, "method_not_allowed", None, "GET /api/flows/alpha/runs")


# --- body limit ---


async def _chunks(total: int, size: int = 64 << 10) -> AsyncIterator[bytes]:
    sent = 0
    yield b'{"params": {"region": "'
    while sent < total:
        step = min(size, total - sent)
        yield b"x" * step
        sent += step
    yield b'"}}'


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "content-length"])
async def test_a_body_over_1_mib_is_a_413_and_the_server_stays_up(
    make_runner: MakeRunner, db_path: Path, chunked: bool
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        data: Any = (
            _chunks(2 * MIB) if chunked else io.BytesIO(b'{"x": "' + b"x" * (2 * MIB) + b'"}')
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(api.url + "/api/flows/alpha/runs", data=data, headers=api.headers) as resp,
        ):
            status, answer = resp.status, await resp.json()
        after = await post(api, "/api/flows/alpha/runs", {"params": {"n": 3}})
        event = await post(api, "/api/events/landed", data=_chunks(2 * MIB))
    assert status == 413
    assert_error(answer, "too_large", "body", "larger than 1048576 bytes")
    assert after[0] == 201
    assert event[0] == 413
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(1,)]


async def test_a_body_of_almost_1_mib_is_accepted_when_streamed(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, "/api/events/landed", data=_chunks(MIB - 4096))
    assert status == 201, answer
    assert len(answer["runs"][0]["trigger"]["payload"]["params"]["region"]) >= MIB - 4096


# --- events ---


async def test_an_event_starts_every_flow_listening_to_it(
    make_runner: MakeRunner, db_path: Path
) -> None:
    payload = {"file": "orders-2026-11-30.csv", "rows": 1200}
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, "/api/events/landed", payload)
    assert status == 201
    assert answer["event"] == "landed"
    assert [run["flow"] for run in answer["runs"]] == ["alpha", "beta"]
    for run in answer["runs"]:
        assert run["trigger"] == {"kind": "event", "name": "landed", "payload": payload}
        assert run["state"] == "queued"
        assert run["idempotency_key"] is None
    assert answer["runs"][0]["params"] == {"region": "eu", "n": 1}
    ids = [run["id"] for run in answer["runs"]]
    assert db_rows(db_path, "SELECT id, flow FROM runs ORDER BY id") == list(
        zip(ids, ["alpha", "beta"], strict=True)
    )


@pytest.mark.parametrize("how", ["query", "header"])
async def test_an_event_with_a_key_makes_its_runs_once(
    make_runner: MakeRunner, db_path: Path, how: str
) -> None:
    path, headers = "/api/events/other", {}
    if how == "query":
        path += "?idempotency_key=batch-17"
    else:
        headers = {"Idempotency-Key": "batch-17"}
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        first = await post(api, path, [1, 2, 3], headers=headers)
        second = await post(api, path, [1, 2, 3], headers=headers)
    assert (first[0], second[0]) == (201, 200)
    assert second[1] == first[1]
    assert [run["flow"] for run in first[1]["runs"]] == ["beta", "gamma"]
    assert {run["idempotency_key"] for run in first[1]["runs"]} == {"event:other:batch-17"}
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(2,)]


async def test_an_event_without_a_body_has_an_empty_object_as_payload(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, "/api/events/other")
    assert status == 201
    assert [run["trigger"]["payload"] for run in answer["runs"]] == [{}, {}]


@pytest.mark.parametrize(
    ("path", "headers", "field", "message"),
    [
        ("/api/events/nobody", {}, "name", "no loaded flow has on_event('nobody')"),
        (
            "/api/events/landed?idempotency_key=a",
            {"Idempotency-Key": "b"},
            "idempotency_key",
            "disagree",
        ),
        ("/api/events/landed?idempotency_key=", {}, "idempotency_key", "non-empty string"),
    ],
    ids=["no-listener", "keys-disagree", "empty-key"],
)
async def test_an_event_nobody_listens_to_or_a_bad_key_is_refused(
    make_runner: MakeRunner,
    db_path: Path,
    path: str,
    headers: dict[str, str],
    field: str,
    message: str,
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, path, {"x": 1}, headers=headers)
    assert status == (404 if field == "name" else 400)
    assert_error(answer, "unknown_event" if field == "name" else "bad_request", field, message)
    assert db_rows(db_path, "SELECT count(*) FROM runs") == [(0,)]


async def test_an_event_with_bad_json_is_a_400(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        status, answer, _ = await post(api, "/api/events/landed", data=b"{nope")
    assert status == 400
    assert_error(answer, "bad_request", "body", "not valid JSON")


# --- stop ---


async def test_on_stop_new_connections_are_refused_and_a_request_in_flight_completes(
    make_runner: MakeRunner, db_path: Path
) -> None:
    """Stopping closes the listening socket first; a request waiting for its commit (another
    connection holds the write lock) gets the grace to finish: 201, its run committed."""
    async with make_runner() as runner:
        ctx = ServiceContext(Config(db=db_path), runner, FLOWS, epoch=1)
        listener = listen(ApiSettings("127.0.0.1", 0, TOKEN))
        url, port = listener.url, listener.sock.getsockname()[1]
        server = ApiServer(ctx, listener, grace=10.0)
        answers: list[tuple[int, Any]] = []
        serving = anyio.CancelScope()
        blocker = sqlite3.connect(db_path, isolation_level=None)
        queueing = anyio.Event()

        class Seen(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.getMessage().startswith("api: queueing a run"):
                    queueing.set()

        seen = Seen(logging.DEBUG)
        api_log = logging.getLogger("sluiceway.runtime.api")
        api_log.addHandler(seen)
        level = api_log.level
        api_log.setLevel(logging.DEBUG)

        async def serve(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with serving:
                await server.run(task_status=task_status)

        async def client() -> None:
            async with (
                aiohttp.ClientSession() as session,
                session.post(url + "/api/flows/alpha/runs", json={}, headers=api_headers) as resp,
            ):
                answers.append((resp.status, await resp.json()))

        api_headers = {"Authorization": f"Bearer {TOKEN}"}
        try:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as group:
                    await group.start(serve)
                    blocker.execute("BEGIN IMMEDIATE")  # the writer's commit must wait
                    group.start_soon(client)
                    await queueing.wait()  # the handler waits for its commit now
                    serving.cancel()  # what the service's SIGTERM does to its feeders
                    await anyio.sleep(0.2)
                    with pytest.raises(ConnectionRefusedError):  # refused at once
                        socket.create_connection(("127.0.0.1", port), timeout=5).close()
                    assert answers == []  # still waiting for its commit
                    blocker.execute("COMMIT")
        finally:
            blocker.close()
            api_log.removeHandler(seen)
            api_log.setLevel(level)
    [(status, answer)] = answers
    assert status == 201, answer
    assert db_rows(db_path, "SELECT id, state FROM runs") == [(answer["id"], "queued")]
