"""The outbox and its sender in process, against a real local endpoint and the real webhook
notifier: same-batch rows, retries, Retry-After, dead letters, a hanging destination, digests
and recoveries, and the canary secret nowhere in the database."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import codec
from runtime.alerting import AlertRoute
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.engine.events import EventBus, RunEnded
from runtime.service.alerts import AlertHub, build_routing
from runtime.states import RunState
from runtime.store import Store, open_store, outbox
from runtime.store.rows import RunRow
from tests.alerts.conftest import CANARY
from tests.alerts.endpoint import Endpoint, Reply
from tests.waiting import WAIT

NOW = datetime(2026, 1, 2, tzinfo=UTC)


def routes(*routes: AlertRoute, **dests: str) -> Config:
    notifiers = {f"webhook:{name}": {"url": url} for name, url in dests.items()}
    return Config(alerts=routes, notifiers=notifiers, alert_retries=3, alert_timeout=1.0)


@asynccontextmanager
async def hub_for(
    tmp_path: Path, config: Config, *, interval: float = 0.02, sending: bool = True
) -> AsyncIterator[tuple[AlertHub, Store, EventBus]]:
    async with open_store(tmp_path / "h.db", interval=interval) as store:
        bus = EventBus()
        hub = AlertHub(store, SystemClock(), config, build_routing(config), dict)
        hub.sender.backoff_first = 0.05
        hub.attach(bus)
        async with anyio.create_task_group() as tg:
            if sending:
                await tg.start(hub.sender.run)
            yield hub, store, bus
            tg.cancel_scope.cancel()


async def end_run(store: Store, bus: EventBus, flow: str, state: RunState) -> int:
    """A run of *flow* recorded and published as the engine does: put_run, then publish."""
    run_id, _ = await store.create_run(
        flow=flow, params={}, trigger={"kind": "manual"}, logical_date=NOW, created_at=NOW
    )
    error = "failed tasks: load" if state is RunState.FAILED else None
    store.put_run(RunRow(run_id, str(state), codec.iso(NOW), codec.iso(NOW), error))
    bus.publish(RunEnded(NOW, run_id, flow, state, error))
    return run_id


def rows(path: Path, sql: str = "SELECT id, event, kind, state, attempts FROM outbox") -> list[Any]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql + " ORDER BY id").fetchall()
    finally:
        conn.close()


def first(tmp_path: Path, column: int) -> Any:
    """A column of the first outbox row, None while there is none."""
    found = rows(tmp_path / "h.db")
    return found[0][column] if found else None


async def until(check: Callable[[], Any]) -> Any:
    """Poll *check* (the database, or what the endpoint's thread recorded) until truthy."""
    with anyio.fail_after(WAIT):
        while not (value := check()):  # noqa: ASYNC110 - another thread, another process
            await anyio.sleep(0.02)
        return value


FAILED = AlertRoute(("run.failed",), ("webhook:ops",))


async def test_the_alert_row_commits_with_the_run_state_not_before(tmp_path: Path) -> None:
    config = routes(FAILED, ops="http://127.0.0.1:9/never")
    # a long batch interval: an awaited write (create_run) goes first, in a batch of its own
    # (no sender: its reads flush the store)
    async with hub_for(tmp_path, config, interval=30.0, sending=False) as (hub, store, bus):
        run_id = await end_run(store, bus, "orders", RunState.FAILED)
        await store.create_run(  # urgent: commits the ops queued so far, without the rows
            flow="other", params={}, trigger={"kind": "manual"}, logical_date=NOW, created_at=NOW
        )
        state = rows(tmp_path / "h.db", f"SELECT state FROM runs WHERE id = {run_id}")
        assert state == [("queued",)]
        assert rows(tmp_path / "h.db") == []  # not ahead of the state change it reports
        await store.flush()
        assert rows(tmp_path / "h.db", f"SELECT state FROM runs WHERE id = {run_id}") == [
            ("failed",)
        ]
        assert [r[1] for r in rows(tmp_path / "h.db")] == ["run.failed"]
        hub.detach()


async def test_a_batchs_alerts_go_as_one_op_and_one_that_fails_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = routes(FAILED, ops="http://127.0.0.1:9/never")
    queue_alert = outbox.queue_alert

    def refusing(db: sqlite3.Connection, alert: dict[str, Any], *args: Any) -> None:
        if alert["flow"] == "bad":
            raise sqlite3.IntegrityError("refused")
        queue_alert(db, alert, *args)

    monkeypatch.setattr(outbox, "queue_alert", refusing)
    async with hub_for(tmp_path, config, interval=30.0, sending=False) as (hub, store, bus):
        ids = [await end_run(store, bus, flow, RunState.FAILED) for flow in ("a", "bad", "b")]
        assert len(store.writer._ops) == 1  # three alerts, one op: no savepoint or waiter each
        await store.flush()
        assert rows(tmp_path / "h.db", "SELECT flow, run_id FROM outbox") == [
            ("a", ids[0]),
            ("b", ids[2]),
        ]
        states = rows(tmp_path / "h.db", "SELECT state FROM runs")
        assert states == [("failed",)] * 3  # the state changes are all there
        assert "an alert could not be queued" in caplog.text
        # the next batch's alerts go in an op of their own
        later = await end_run(store, bus, "c", RunState.FAILED)
        await store.flush()
        assert rows(tmp_path / "h.db", "SELECT run_id FROM outbox")[-1] == (later,)
        hub.detach()


async def test_a_failure_is_delivered_once_with_its_facts(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    config = routes(FAILED, ops=endpoint.url(f"/hooks/{CANARY}"))
    async with hub_for(tmp_path, config) as (_hub, store, bus):
        run_id = await end_run(store, bus, "orders", RunState.FAILED)
        await end_run(store, bus, "orders", RunState.SUCCEEDED)  # not routed
        await until(lambda: endpoint.answered())
        await until(lambda: first(tmp_path, 3) == "delivered")
    body = endpoint.answered()[0].json()
    assert body["event"] == "run.failed"
    assert body["run_id"] == run_id
    assert body["logical_date"] == "2026-01-02T00:00:00Z"
    assert body["id"] == "sluiceway-1"
    assert len(endpoint.received) == 1
    assert CANARY.encode() not in (tmp_path / "h.db").read_bytes()


async def test_a_500_then_success_and_a_429_retry_after(tmp_path: Path, endpoint: Endpoint) -> None:
    endpoint.answer(Reply(500), Reply(429, {"Retry-After": "1"}), Reply(200))
    config = routes(FAILED, ops=endpoint.url())
    async with hub_for(tmp_path, config) as (_hub, store, bus):
        await end_run(store, bus, "orders", RunState.FAILED)
        await until(lambda: first(tmp_path, 3) == "delivered")
    assert [r.status for r in endpoint.received] == [500, 429, 200]
    (row,) = rows(tmp_path / "h.db", "SELECT attempts, last_error, answer FROM outbox")
    assert row[0] == 3
    assert "429" in row[1]
    assert row[2].startswith("200")
    # the 429 asked for a second: the third try did not come before it
    assert rows(tmp_path / "h.db", "SELECT state FROM outbox") == [("delivered",)]


async def test_dead_letter_after_the_tries_then_resend(tmp_path: Path, endpoint: Endpoint) -> None:
    from runtime.store import outbox

    endpoint.answer(Reply(503))
    config = routes(FAILED, ops=endpoint.url())
    async with hub_for(tmp_path, config) as (hub, store, bus):
        await end_run(store, bus, "orders", RunState.FAILED)
        await until(lambda: first(tmp_path, 3) == "dead")
        assert first(tmp_path, 4) == 3  # alert_retries
        endpoint.answer(Reply(200))
        why = await store.writer.submit(lambda db: outbox.resend(db, 1, 0.0))
        assert why is None
        hub.sender.wake()
        await until(lambda: first(tmp_path, 3) == "delivered")
        again = await store.writer.submit(lambda db: outbox.resend(db, 1, 0.0))
        assert again is not None
        assert "not dead" in again


async def test_a_hanging_destination_delays_neither_others_nor_the_caller(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    endpoint.answer(Reply(hang=True))
    route = AlertRoute(("run.failed",), ("webhook:slow", "webhook:fast"))
    config = routes(route, slow=endpoint.url("/slow"), fast=endpoint.url("/fast"))
    endpoint.answer(Reply(hang=True), Reply(200))
    async with hub_for(tmp_path, config) as (_hub, store, bus):
        started = anyio.current_time()
        await end_run(store, bus, "orders", RunState.FAILED)
        assert anyio.current_time() - started < 0.9  # publishing never waits for delivery
        await until(lambda: endpoint.answered("/fast"))
        assert not endpoint.answered("/slow")  # it still hangs (timeout 1s)
        await until(lambda: endpoint.answered("/slow"))  # timed out, retried, delivered


async def test_a_digest_of_20_failures_then_one_recovery(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    route = AlertRoute(("run.failed",), ("webhook:ops",), digest=3600.0)
    config = routes(route, ops=endpoint.url())
    async with hub_for(tmp_path, config) as (_hub, store, bus):
        for _ in range(20):
            await end_run(store, bus, "orders", RunState.FAILED)
        await store.flush()
        assert {r[3] for r in rows(tmp_path / "h.db")} == {"held"}
        assert endpoint.received == []  # the window is an hour
        await end_run(store, bus, "orders", RunState.SUCCEEDED)
        await until(lambda: len(endpoint.answered()) == 2)
        await anyio.sleep(0.3)  # nothing else follows
    digest, recovery = (r.json() for r in endpoint.received)
    assert len(endpoint.received) == 2
    assert digest["kind"] == "digest"
    assert len(digest["items"]) == 20
    assert all(item["event"] == "run.failed" for item in digest["items"])
    assert recovery["kind"] == "recovery"
    assert recovery["resolves"] == ["run.failed"]


async def test_a_flows_own_routes_apply_to_it_only(tmp_path: Path, endpoint: Endpoint) -> None:
    from runtime import Flow
    from runtime.engine.events import TaskEnded
    from runtime.states import TaskState

    flow = Flow(
        "orders",
        alerts=[
            {"on": ["task.failed"], "to": ["webhook:ops"]},
            {"on": ["task.failed"], "to": ["webhook:gone"]},
        ],
    )
    config = routes(ops=endpoint.url())
    async with open_store(tmp_path / "h.db", interval=0.02) as store:
        bus = EventBus()
        routing = build_routing(config)
        hub = AlertHub(store, SystemClock(), config, routing, lambda: {"orders": flow})
        hub.attach(bus)
        (problem,) = routing.flow_problems([flow])
        assert "test_outbox.py" in problem
        assert "unknown destination 'webhook:gone'" in problem
        async with anyio.create_task_group() as tg:
            await tg.start(hub.sender.run)
            for name in ("orders", "billing"):
                bus.publish(
                    TaskEnded(NOW, 1, name, "load", "load", None, TaskState.FAILED, 2, 0.1, "x")
                )
            await until(lambda: first(tmp_path, 3) == "delivered")
            tg.cancel_scope.cancel()
    (got,) = endpoint.answered()
    assert got.json()["flow"] == "orders"
    assert got.json()["event"] == "task.failed"
    assert len(rows(tmp_path / "h.db")) == 1  # billing has no route


async def test_a_digest_window_closes_by_itself(tmp_path: Path, endpoint: Endpoint) -> None:
    # the sender starts once the four failures are queued, so however loaded the machine the
    # three of orders fall in one window (with the sender running, 0.5 s and even 3 s windows
    # closed between them on a busy 2-core machine); the window still closes by itself
    route = AlertRoute(("run.failed",), ("webhook:ops",), digest=1.0)
    config = routes(route, ops=endpoint.url())
    async with hub_for(tmp_path, config, sending=False) as (hub, store, bus):
        for _ in range(3):
            await end_run(store, bus, "orders", RunState.FAILED)
        await end_run(store, bus, "billing", RunState.FAILED)  # its own window, alone
        async with anyio.create_task_group() as group:
            await group.start(hub.sender.run)
            await until(lambda: len(endpoint.answered()) == 2)
            group.cancel_scope.cancel()
    by_flow = {r.json()["flow"]: r.json() for r in endpoint.answered()}
    assert by_flow["orders"]["kind"] == "digest"
    assert len(by_flow["orders"]["items"]) == 3
    assert by_flow["billing"]["kind"] == "alert"  # one alone goes as it is
    states = rows(tmp_path / "h.db", "SELECT flow, kind, state, digest_id FROM outbox")
    digest_id = next(i for i, (f, k, *_) in enumerate(states, 1) if k == "digest")
    assert sorted(s[2] for s in states) == ["delivered", "delivered", *["grouped"] * 3]
    assert {s[3] for s in states if s[2] == "grouped"} == {digest_id}
