"""``GET /metrics`` from a real served API over a real store while runs execute in the same
process: counters and histograms that move, pools with a blocked task, the alert outbox, the
files source's backlog, schedule lateness, the event loop's lag; parsed by prometheus-client's
own parser, every name sluiceway_*, no label that grows with the history."""

from __future__ import annotations

import os
import platform
import sqlite3
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from runtime import Flow, Run, files
from runtime.abc import SourceMetric
from runtime.engine.events import RunEnded, TaskEnded
from runtime.service.metrics.lag import LagProbe
from runtime.service.sources import Sources
from runtime.states import RunState, TaskState
from runtime.store import outbox
from runtime.testing import FakeClock
from tests.conftest import MakeRunner
from tests.service.metrics_helpers import Scrape, scrape, serve_api
from tests.waiting import WAIT


def etl_flow() -> Flow:
    """extract -> load (which fails once, then succeeds: retries=1) -> report, plus a check."""
    flow = Flow("etl")
    tries: list[int] = []

    @flow.task
    async def extract(run: Run) -> int:
        run.check("rows", True)
        run.check("fresh", False, severity="warn")
        return 3

    @flow.task(retries=1, retry_delay=0)
    async def load(extract: int) -> int:
        tries.append(1)
        if len(tries) % 2 == 1:
            raise ValueError("flaky warehouse")
        return extract

    @flow.task
    async def report(load: int) -> None:
        pass

    return flow


async def test_runs_attempts_checks_and_durations_move_as_runs_execute(
    make_runner: MakeRunner,
) -> None:
    flow = etl_flow()
    async with make_runner() as runner, serve_api(runner, {"etl": flow}) as served:
        before = await scrape(served.api)
        before.check_well_formed()
        # every loaded flow's end counters exist at 0 from the start (rate() needs a first 0)
        assert before.value("sluiceway_runs_ended_total", flow="etl", state="succeeded") == 0
        assert before.value("sluiceway_task_duration_seconds_count", flow="etl") is None
        for _ in range(2):
            assert (await runner.run(flow)).state is RunState.SUCCEEDED
        await runner.store.flush()
        after = await scrape(served.api)
    after.check_well_formed()
    assert after.value("sluiceway_runs_ended_total", flow="etl", state="succeeded") == 2
    assert after.value("sluiceway_runs_ended_total", flow="etl", state="failed") == 0
    # 3 tasks x 2 runs succeeded, and load's first attempt of each run failed
    assert after.value("sluiceway_task_attempts_total", flow="etl", state="succeeded") == 6
    assert after.value("sluiceway_task_attempts_total", flow="etl", state="failed") == 2
    assert after.value("sluiceway_check_failures_total", flow="etl", severity="warn") == 2
    assert after.value("sluiceway_task_duration_seconds_count", flow="etl") == 6
    assert after.value("sluiceway_run_duration_seconds_count", flow="etl") == 2
    assert after.value("sluiceway_run_duration_seconds_bucket", flow="etl", le="+Inf") == 2
    # from the store, at the scrape
    assert after.value("sluiceway_runs", flow="etl", state="succeeded") == 2
    assert after.value("sluiceway_runs", flow="etl", state="queued") == 0  # 0, not absent
    assert after.value("sluiceway_queue_depth", flow="etl") == 0
    assert after.value("sluiceway_tasks_running", flow="etl") == 0
    assert after.value("sluiceway_flows_loaded") == 1
    assert after.value("sluiceway_store_writable") == 1
    python = platform.python_version()
    assert after.value("sluiceway_build_info", version=after_version(after), python=python) == 1
    # the process collector is on the service's registry, under our prefix
    assert after.value("sluiceway_process_resident_memory_bytes") is not None


def after_version(scraped: Scrape) -> str:
    for family in scraped.families:
        if family.name == "sluiceway_build_info":
            return str(family.samples[0].labels["version"])
    raise AssertionError("no sluiceway_build_info")


async def test_a_scheduled_run_records_how_late_it_started(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    flow = Flow("nightly")
    flow.task()(noop)
    async with make_runner() as runner, serve_api(runner, {"nightly": flow}) as served:
        due = clock.now() - timedelta(seconds=90)
        trigger = {"kind": "schedule", "spec": "cron('0 2 * * *')", "scheduled": due.isoformat()}
        await runner.run(flow, trigger=trigger, logical_date=due)
        await runner.run(flow)  # a manual run is never late
        got = await scrape(served.api)
    name = "sluiceway_schedule_lateness_seconds"
    assert got.value(name + "_count", flow="nightly") == 1
    assert got.value(name + "_sum", flow="nightly") == pytest.approx(90.0)
    assert got.value(name + "_bucket", flow="nightly", le="60.0") == 0
    assert got.value(name + "_bucket", flow="nightly", le="300.0") == 1


async def noop() -> None:
    """A task that does nothing."""


async def test_pools_show_slots_in_use_and_waiters_while_a_task_blocks(
    make_runner: MakeRunner,
) -> None:
    flow = Flow("warehouse")
    started, release = anyio.Event(), anyio.Event()

    async def blocking() -> None:
        started.set()
        await release.wait()

    for name in ("first", "second", "third"):
        flow.task(name=name, pool="single")(blocking)
    async with (
        make_runner(max_concurrency=8) as runner,
        serve_api(runner, {"warehouse": flow}) as served,
        anyio.create_task_group() as group,
    ):
        group.start_soon(runner.run, flow)
        with anyio.fail_after(WAIT):
            await started.wait()
        await runner.store.flush()  # the run's "running" row is committed
        got = await scrape(served.api)
        release.set()
    got.check_well_formed()
    assert got.value("sluiceway_pool_slots", pool="single") == 1
    assert got.value("sluiceway_pool_slots_used", pool="single") == 1
    assert got.value("sluiceway_pool_waiters", pool="single") == 2
    assert got.value("sluiceway_pool_slots", pool="warehouse") == 2
    assert got.value("sluiceway_pool_slots_used", pool="warehouse") == 0
    assert got.value("sluiceway_pool_slots", pool="global") == 8
    assert got.value("sluiceway_pool_slots_used", pool="global") == 1
    assert got.value("sluiceway_tasks_running", flow="warehouse") == 1
    assert got.value("sluiceway_runs", flow="warehouse", state="running") == 1


async def test_outbox_depth_and_dead_letters_by_destination(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    alert = {"event": "run.failed", "kind": "alert", "flow": "etl", "summary": "etl failed"}
    stuck, fine = outbox.Queued("webhook:stuck"), outbox.Queued("webhook:fine")
    async with make_runner() as runner, serve_api(runner, {}) as served:
        store = runner.store
        for _ in range(3):
            await store.writer.submit(
                lambda db: outbox.queue_alert(db, dict(alert), [stuck, fine], clock.now())
            )
        # the stuck destination gave up on its first alert; the fine one delivered all three
        marks = {1: "dead", 2: "delivered", 4: "delivered", 6: "delivered"}

        def mark_all(db: sqlite3.Connection) -> None:
            for row_id, state in marks.items():
                outbox.mark(db, row_id, state=state, now=clock.now())

        await store.writer.submit(mark_all)
        got = await scrape(served.api)
    got.check_well_formed()
    assert got.value("sluiceway_alert_outbox", destination="webhook:stuck", state="pending") == 2
    assert got.value("sluiceway_alert_dead_letters", destination="webhook:stuck") == 1
    assert got.value("sluiceway_alert_outbox", destination="webhook:fine", state="pending") is None
    assert got.value("sluiceway_alert_dead_letters", destination="webhook:fine") is None


async def test_the_files_source_reports_its_backlog_and_claims_wait_to_be_settled(
    make_runner: MakeRunner, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    flow = Flow("ingest", triggers=[files(str(inbox), "*.csv", stable_for="1h")])
    flow.task()(noop)
    old = time.time() - 7200  # written two hours ago: complete at once
    (inbox / "old.csv").write_text("a,b\n")
    os.utime(inbox / "old.csv", (old, old))
    (inbox / "fresh.csv").write_text("a,b\n")  # written now: stabilizing for an hour
    async with (
        make_runner(clock=_SystemTime()) as runner,
        serve_api(runner, {"ingest": flow}) as served,
        anyio.create_task_group() as group,
    ):
        sources = Sources(served.api.ctx)
        await group.start(sources.run)  # started once the start-up scan claimed old.csv
        got = await scrape(served.api)
        group.cancel_scope.cancel()
    got.check_well_formed()
    name = "sluiceway_trigger_backlog"
    assert got.value(name, source="files", flow="ingest", state="stabilizing") == 1
    assert got.value(name, source="files", flow="ingest", state="ready") == 0
    assert got.value("sluiceway_file_claims_unsettled", flow="ingest") == 1
    assert got.value("sluiceway_queue_depth", flow="ingest") == 1  # no queue runs here
    assert got.value("sluiceway_queue_oldest_age_seconds", flow="ingest") is not None


class _SystemTime(FakeClock):
    """The fake clock set to the real time: files' mtimes are real."""

    def __init__(self) -> None:
        from datetime import UTC, datetime

        super().__init__(datetime.fromtimestamp(time.time(), UTC))


async def test_a_trigger_metric_with_an_unbounded_label_is_left_out_and_logged(
    make_runner: MakeRunner, caplog: pytest.LogCaptureFixture
) -> None:
    samples = [
        SourceMetric("backlog", "messages not yet run", 4, {"flow": "etl", "state": "ready"}),
        SourceMetric("backlog", "messages not yet run", 1, {"path": "/data/in/x.csv"}),
        SourceMetric("Bad-Name", "?", 1),
    ]
    async with make_runner() as runner, serve_api(runner, {}) as served:
        served.api.ctx.trigger_metrics = lambda: {"queue": samples}
        got = await scrape(served.api)
        again = await scrape(served.api)
    got.check_well_formed()
    assert got.value("sluiceway_trigger_backlog", source="queue", flow="etl", state="ready") == 4
    assert "/data/in/x.csv" not in got.text
    assert "Bad-Name" not in got.text
    refused = [r.getMessage() for r in caplog.records if "left out of /metrics" in r.getMessage()]
    assert len(refused) == 2, refused  # once each, not at every scrape
    assert "label(s) path not allowed" in refused[0]
    assert again.value("sluiceway_trigger_backlog", source="queue", flow="etl", state="ready") == 4


async def test_metrics_needs_the_token_and_speaks_openmetrics_when_asked(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, serve_api(runner, {}) as served:
        url = served.api.url + "/metrics"
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as resp:
                body: Any = await resp.json()
                assert resp.status == 401
                assert body["error"]["code"] == "unauthorized"
            accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with session.get(url, headers={**served.api.headers, **accept}) as resp:
                text = await resp.text()
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert text.rstrip().endswith("# EOF")


async def test_the_store_is_read_once_per_cache_window(make_runner: MakeRunner) -> None:
    reads: list[str] = []

    async def read(fn: Any, *args: Any) -> Any:
        reads.append(fn.__name__)
        return await runner.store.read(fn, *args)

    flow = Flow("etl")
    flow.task()(noop)
    async with make_runner() as runner, serve_api(runner, {}) as served:
        metrics = served.server.metrics
        metrics.cache, metrics.history_cache = 3600.0, 3600.0
        await metrics.refresh(read)
        await metrics.refresh(read)
        assert reads == ["read_gauges", "read_ended"]
        await runner.run(flow)
        await runner.store.flush()
        metrics.cache = 0.0  # the live counts again; the ended runs' not yet
        await metrics.refresh(read)
        assert reads == ["read_gauges", "read_ended", "read_gauges"]
        assert metrics.ended == []
        metrics.history_cache = 0.0
        await metrics.refresh(read)
        assert metrics.ended == [("etl", "succeeded", 1)]


async def test_the_recorder_stops_counting_when_the_server_stops(make_runner: MakeRunner) -> None:
    async with make_runner() as runner:
        async with serve_api(runner, {}) as served:
            recorder = served.server.metrics.recorder
            now = runner.clock.now()
            runner.bus.publish(RunEnded(now, 1, "etl", RunState.FAILED, "boom"))
        runner.bus.publish(RunEnded(now, 2, "etl", RunState.FAILED, "boom"))
    assert recorder.runs_ended[("etl", "failed")] == 1


async def test_an_end_without_a_seen_start_is_no_attempt(make_runner: MakeRunner) -> None:
    # a skipped task (never attempted), or a mapped task's own end: no attempt, no duration
    async with make_runner() as runner, serve_api(runner, {}) as served:
        recorder = served.server.metrics.recorder
        now = runner.clock.now()
        ended = TaskEnded(now, 7, "etl", "load", "load", None, TaskState.SKIPPED, 0, None)
        runner.bus.publish(ended)
    assert not recorder.attempts
    assert not recorder.task_durations


async def test_the_lag_probe_sees_a_blocked_loop() -> None:
    probe = LagProbe(interval=0.01)
    async with anyio.create_task_group() as group:
        group.start_soon(probe.run)
        await anyio.sleep(0.05)
        time.sleep(0.2)  # noqa: ASYNC251 - blocking the loop on purpose
        await anyio.sleep(0.05)  # the probe's timer is long due: it wakes first, 0.19 s late
        group.cancel_scope.cancel()
    assert probe.histogram.count >= 2
    assert probe.histogram.sum >= 0.15
    assert probe.histogram.counts[-1] == 0  # nothing over 10 s
