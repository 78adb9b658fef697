"""The dashboard's pages over a real served API and a store holding real runs made by the
real runner: the DOM contract's elements and their states, the grid, the DAG and the Gantt
as served, the buttons per run state, and paging."""

from __future__ import annotations

import re

import anyio
import pytest

from runtime import Flow
from runtime.service.web.gantt import LABEL_W, PLOT_W
from runtime.service.web.home import SQUARES
from runtime.store.cursors import set_paused
from runtime.store.incoming import queue_run
from runtime.store.outbox import Queued, queue_alert
from runtime.testing import FakeClock
from tests.conftest import MakeRunner
from tests.service.api_server import open_api
from tests.service.web.history import History, get_page, open_history
from tests.service.web.html_tree import Element, parse
from tests.waiting import WAIT


async def page(h: History, path: str, status: int = 200) -> Element:
    got, html, resp = await get_page(h.api, path)
    assert got == status, html
    assert resp.content_type == "text/html"
    return parse(html)


def body(doc: Element) -> Element:
    return doc.find("body")


async def test_home_shows_every_flow_with_its_runs_as_squares(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        doc = await page(h, "/")
    assert body(doc).attrs["data-live"] == "home"
    rows = {tr.attrs["data-flow"]: tr for tr in doc.find_all("tr", data_flow=True)}
    assert set(rows) == {"shop", "hostile"}
    squares = rows["shop"].find_all("a", cls="sq")
    # oldest left, newest right; each links to its run and carries its state
    assert [(a.attrs["data-run"], a.state()) for a in squares] == [
        (str(h.ok.id), "succeeded"),
        (str(h.failed.id), "failed"),
    ]
    assert squares[0].attrs["href"] == f"/runs/{h.ok.id}"
    assert rows["shop"].find(cls="state").text() == "failed"  # the latest run's state
    assert "manual or API only" in rows["shop"].text()


async def test_home_puts_failures_at_the_top(make_runner: MakeRunner, clock: FakeClock) -> None:
    async with open_history(make_runner, clock) as h:
        doc = await page(h, "/")
    attention = doc.by_id("attention")
    assert "data-refresh" in attention.attrs
    flagged = {el.attrs["data-run"] for el in attention.find_all(cls="state")}
    assert flagged == {str(h.failed.id), str(h.hostile.id)}
    assert "failed tasks: report" in attention.text()  # the run's error
    # the attention section comes before the flows
    sections = [el.id for el in doc.find_all("section")]
    assert sections.index("attention") < sections.index("flows")


async def test_home_keeps_twenty_squares_and_a_flow_older_failure(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        store = h.api.ctx.store
        shop = h.flows["shop"]
        made = []
        for _ in range(SQUARES + 2):
            queued = await queue_run(
                store,
                shop,
                params=shop.resolve_params({}),
                trigger={"kind": "manual"},
                key=None,
                now=clock.now(),
            )
            made.append(queued.run_id)
        clock.advance(2 * 86400)  # the failures are two days old now
        doc = await page(h, "/")
    row = doc.find("tr", data_flow="shop")
    squares = row.find_all("a", cls="sq")
    assert [a.attrs["data-run"] for a in squares] == [str(i) for i in made[-SQUARES:]]
    assert {a.state() for a in squares} == {"queued"}
    attention = doc.by_id("attention")
    # hostile's latest run failed (2 days ago): still flagged; shop's latest is queued
    assert {el.attrs["data-run"] for el in attention.find_all(cls="state")} == {str(h.hostile.id)}
    assert [b.text() for b in row.find_all(cls="badge")] == [f"{SQUARES + 2} queued"]


async def test_flow_grid_is_runs_by_tasks_in_graph_order(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        doc = await page(h, "/flows/shop")
    assert body(doc).attrs["data-live"] == "flow"
    assert body(doc).attrs["data-flow"] == "shop"
    grid = doc.by_id("grid")
    assert grid.tag == "table"
    assert "data-refresh" in grid.attrs
    heads = [th.text().strip() for th in grid.find_all("th", cls="task-col")]
    assert heads == ["extract", "load[ ]", "audit", "report"]
    cells = {(a.attrs["data-run"], a.attrs["data-task"]): a for a in grid.find_all(cls="cell")}
    ok, failed = str(h.ok.id), str(h.failed.id)
    assert cells[(failed, "report")].state() == "failed"
    assert cells[(ok, "report")].state() == "succeeded"
    load = cells[(ok, "load")]
    assert load.state() == "succeeded"
    assert load.text() == "3/3"
    assert "1 succeeded" not in load.attrs["title"]
    assert "3 succeeded" in load.attrs["title"]
    assert load.attrs["href"] == f"/runs/{ok}#task-load"
    # newest run first
    assert [a.attrs["data-run"] for a in grid.find_all("a", cls="sq")] == [failed, ok]


async def test_flow_page_trigger_form_is_built_from_the_params(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        doc = await page(h, "/flows/shop")
    form = doc.by_id("trigger-form")
    assert form.attrs["data-flow"] == "shop"
    inputs = {i.attrs["name"]: i for i in form.find_all("input")}
    assert {n: i.attrs["data-type"] for n, i in inputs.items()} == {
        "param.region": "str",
        "param.n": "int",
        "param.ratio": "float",
        "param.dry": "bool",
        "param.tags": "json",
        "param.fail": "bool",
    }
    assert inputs["param.region"].attrs["value"] == "eu"
    assert inputs["param.n"].attrs["value"] == "3"
    assert inputs["param.ratio"].attrs["value"] == "0.5"
    assert inputs["param.tags"].attrs["value"] == '["a"]'
    assert inputs["param.dry"].attrs["type"] == "checkbox"
    assert "checked" not in inputs["param.dry"].attrs
    button = doc.by_id("trigger")
    assert button.attrs["type"] == "submit"
    assert button.parent is form
    pause = doc.by_id("pause")
    assert pause.attrs["data-action"] == "/api/flows/shop/pause"
    assert not doc.find_all(id="unpause")


async def test_a_paused_flow_offers_unpause(make_runner: MakeRunner, clock: FakeClock) -> None:
    async with open_history(make_runner, clock) as h:
        await set_paused(h.api.ctx.store, "shop", True, clock.now())
        doc = await page(h, "/flows/shop")
        home = await page(h, "/")
    assert doc.by_id("unpause").attrs["data-action"] == "/api/flows/shop/unpause"
    assert not doc.find_all(id="pause")
    assert "paused" in home.find("tr", data_flow="shop").text()


async def test_grid_pages_by_cursor(make_runner: MakeRunner, clock: FakeClock) -> None:
    async with open_history(make_runner, clock) as h:
        first = await page(h, "/flows/shop?limit=1")
        rows = first.by_id("grid").find_all("a", cls="sq")
        assert [a.attrs["data-run"] for a in rows] == [str(h.failed.id)]
        older = first.find("a", rel="next").attrs["href"]
        assert older == f"/flows/shop?limit=1&before={h.failed.id}"
        second = await page(h, older)
        rows = second.by_id("grid").find_all("a", cls="sq")
        assert [a.attrs["data-run"] for a in rows] == [str(h.ok.id)]
        assert not second.find_all("a", rel="next")  # the oldest page


async def test_run_page_shows_state_dag_gantt_and_log_tail(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        doc = await page(h, f"/runs/{h.ok.id}")
    run = str(h.ok.id)
    assert body(doc).attrs["data-live"] == "run"
    assert body(doc).attrs["data-run"] == run
    state = doc.by_id("run-state")
    assert state.state() == "succeeded"
    assert state.text() == "succeeded"
    assert state.attrs["data-run"] == run
    assert "data-state-text" in state.attrs
    dag = doc.by_id("dag")
    nodes = {g.attrs["data-task"]: g for g in dag.find_all("g", cls="node")}
    assert set(nodes) == {"extract", "load", "audit", "report"}
    assert {g.state() for g in nodes.values()} == {"succeeded"}
    assert all(g.attrs["data-run"] == run for g in nodes.values())
    assert "3/3" in nodes["load"].text()
    edges = {(p.attrs["data-from"], p.attrs["data-to"]) for p in dag.find_all("path", cls="edge")}
    assert edges == {
        ("extract", "load"), ("extract", "audit"), ("extract", "report"),
        ("load", "report"), ("audit", "report"),
    }  # fmt: skip
    bars = doc.by_id("gantt").find_all("rect", cls="bar")
    assert sorted((b.attrs["data-task"], b.attrs["data-attempt"], b.state()) for b in bars) == [
        ("audit", "1", "succeeded"),
        ("extract", "1", "succeeded"),
        ("load[0]", "1", "succeeded"),
        ("load[1]", "1", "failed"),
        ("load[1]", "2", "succeeded"),
        ("load[2]", "1", "succeeded"),
        ("report", "1", "succeeded"),
    ]
    retried = sorted((b for b in bars if b.attrs["data-task"] == "load[1]"),
                     key=lambda b: b.attrs["data-attempt"])  # fmt: skip
    first_end = float(retried[0].attrs["x"]) + float(retried[0].attrs["width"])
    assert float(retried[1].attrs["x"]) > first_end  # the retry's delay is a visible gap
    assert doc.by_id("gantt").find_all("line", cls="gap")
    tail = doc.by_id("log-tail")
    assert tail.attrs["data-run"] == run
    lines = tail.find_all("div", cls="log-line")
    assert any("loaded item 1" in line.find(cls="msg").text() for line in lines)
    assert all(line.attrs["data-id"].isdigit() for line in lines)
    warned = [line for line in lines if "lvl-WARNING" in line.classes]
    assert warned
    assert "retrying" in warned[0].text()
    assert {line.find(cls="task").text() for line in lines} >= {"extract", "load[1]", "report"}
    assert not doc.find_all(id="retry")
    assert not doc.find_all(id="cancel")


async def test_run_page_of_a_failed_run_has_errors_checks_and_retry(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        doc = await page(h, f"/runs/{h.failed.id}")
    assert doc.by_id("run-state").state() == "failed"
    assert doc.by_id("retry").attrs["data-action"] == f"/api/runs/{h.failed.id}/retry"
    assert not doc.find_all(id="cancel")
    report = doc.by_id("task-report")
    assert report.state() == "failed"
    assert report.attrs["data-task"] == "report"
    assert doc.by_id("task-load[1]").find("td", data_label="Attempts").text() == "2"
    errors = doc.find_all("details", cls="error")
    assert len(errors) == 1
    assert "ValueError: report: totals do not add up" in errors[0].find("pre").text()
    checks = {
        tr.find("code").text(): tr.find(cls="badge").text()
        for tr in doc.by_id("checks").find("tbody").find_all("tr")
    }
    assert checks == {"row_count": "passed", "freshness": "failed"}
    params = doc.find("pre", cls="json").text()
    assert '"region": "us"' in params
    assert '"fail": true' in params
    assert "manual" in doc.by_id("run-head").find(cls="kind").text()


async def test_a_queued_run_shows_the_whole_dag_pending_and_cancel(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        queued = await queue_run(
            h.api.ctx.store, h.flows["shop"], params=h.flows["shop"].resolve_params({}), key=None, now=clock.now(),
            trigger={"kind": "event", "name": "landed", "payload": {"file": "a.csv"}},
        )  # fmt: skip
        doc = await page(h, f"/runs/{queued.run_id}")
        grid = await page(h, "/flows/shop")
    run = str(queued.run_id)
    assert doc.by_id("run-state").state() == "queued"
    assert doc.by_id("cancel").attrs["data-action"] == f"/api/runs/{run}/cancel"
    assert not doc.find_all(id="retry")
    nodes = doc.by_id("dag").find_all("g", cls="node")
    assert {g.attrs["data-task"]: g.state() for g in nodes} == dict.fromkeys(
        ["extract", "load", "audit", "report"], "pending"
    )
    assert not doc.by_id("gantt").find_all("rect", cls="bar")
    head = doc.by_id("run-head")
    assert "landed" in head.text()
    assert '"file": "a.csv"' in head.find("pre", cls="json").text()
    # the grid has live cells for the queued run, for live.js to colour
    cells = grid.by_id("grid").find_all("a", cls="cell", data_run=run)
    assert [(c.attrs["data-task"], c.state()) for c in cells] == [
        ("extract", "pending"), ("load", "pending"), ("audit", "pending"), ("report", "pending"),
    ]  # fmt: skip


async def test_run_list_filters_and_pages(make_runner: MakeRunner, clock: FakeClock) -> None:
    async with open_history(make_runner, clock) as h:
        every = await page(h, "/runs")
        failed_shop = await page(h, "/runs?flow=shop&state=failed")
        first = await page(h, "/runs?limit=2")
        nxt = first.find("a", rel="next").attrs["href"]
        rest = await page(h, nxt)

    def ids(doc: Element) -> list[str]:
        return [el.attrs["data-run"] for el in doc.by_id("runs").find_all(cls="state")]

    assert body(every).attrs["data-live"] == "runs"
    assert ids(every) == [str(h.hostile.id), str(h.failed.id), str(h.ok.id)]
    assert ids(failed_shop) == [str(h.failed.id)]
    assert ids(first) == [str(h.hostile.id), str(h.failed.id)]
    assert nxt == f"/runs?flow=&state=&before={h.failed.id}"
    assert ids(rest) == [str(h.ok.id)]
    assert not rest.find_all("a", rel="next")


async def test_log_search_finds_lines_across_runs(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        doc = await page(h, "/logs?q=LOADED+item+1")
        only_hostile = await page(h, "/logs?q=script&flow=hostile")
        literal = await page(h, "/logs?q=%25", status=400)
        empty = await page(h, "/logs")
    assert body(doc).attrs["data-live"] == "logs"
    form = doc.by_id("log-search")
    assert (form.attrs["method"], form.attrs["action"]) == ("get", "/logs")
    assert form.find("input", name="q").attrs["value"] == "LOADED item 1"
    hits = doc.find_all("div", cls="log-hit")
    # one line per run that loaded item 1, newest first, each linking to its run
    assert [hit.find("a", cls="hit-run").attrs["href"] for hit in hits] == [
        f"/runs/{h.failed.id}",
        f"/runs/{h.ok.id}",
    ]
    assert [m.text().lower() for m in hits[0].find_all("mark")] == ["loaded", "item", "1"]
    assert {
        hit.find("a", cls="hit-run").attrs["href"] for hit in only_hostile.find_all(cls="log-hit")
    } == {f"/runs/{h.hostile.id}"}
    assert not literal.find_all(cls="log-hit")  # no word to search for: a 400 naming q
    assert not empty.find_all(cls="log-hit")


async def test_run_logs_page_filters_by_task_and_pages(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    async with open_history(make_runner, clock) as h:
        one = await page(h, f"/runs/{h.ok.id}/logs?task=load%5B1%5D")
        every = await page(h, f"/runs/{h.ok.id}/logs")
        mapped = await page(h, f"/runs/{h.ok.id}/logs?task=load")

    def tasks(doc: Element) -> list[str]:
        return [line.find(cls="task").text() for line in doc.find_all(cls="log-line")]

    assert set(tasks(one)) == {"load[1]"}
    assert len(tasks(one)) == 2
    assert set(tasks(mapped)) == {"load[0]", "load[1]", "load[2]"}
    assert set(tasks(every)) == {"extract", "load[0]", "load[1]", "load[2]", "report"}
    ids = [int(line.attrs["data-id"]) for line in every.find_all(cls="log-line")]
    assert ids == sorted(ids)


async def test_every_page_is_csp_clean_and_well_formed(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    """No inline script, style attribute, style block or event handler on any page: the
    CSP (script-src 'self'; style-src 'self') would block them."""
    async with open_history(make_runner, clock) as h:
        paths = [
            "/", "/flows/shop", "/flows/hostile", "/runs", f"/runs/{h.ok.id}",
            f"/runs/{h.failed.id}", f"/runs/{h.hostile.id}", f"/runs/{h.ok.id}/logs",
            "/logs?q=item", "/runs/999999",
        ]  # fmt: skip
        for path in paths:
            _, html, _ = await get_page(h.api, path)
            doc = parse(html)
            for el in doc.iter():
                assert "style" not in el.attrs, (path, el.tag)
                assert not [a for a in el.attrs if a.startswith("on")], (path, el.tag)
                assert el.tag != "style", path
                if el.tag == "script":
                    assert el.attrs["src"].startswith("/static/")
                    assert not el.text().strip()
            assert not re.search(r"javascript:", html, re.IGNORECASE), path
            assert doc.find("meta", name="csrf-token")


async def test_run_page_lists_the_alerts_sent(make_runner: MakeRunner, clock: FakeClock) -> None:
    async with open_history(make_runner, clock) as h:
        alert = {"event": "run.failed", "kind": "alert", "flow": "shop", "run_id": h.failed.id}
        await h.api.ctx.store.writer.submit(
            lambda db: queue_alert(db, alert, [Queued("ops-slack")], clock.now())
        )
        doc = await page(h, f"/runs/{h.failed.id}")
    (row,) = doc.by_id("alerts").find("tbody").find_all("tr")
    assert row.find("td", data_label="Destination").text() == "ops-slack"
    assert row.find("td", data_label="State").text() == "pending"
    assert "run.failed" in row.text()


async def test_a_running_run_has_cancel_and_a_bar_reaching_now(
    make_runner: MakeRunner, clock: FakeClock
) -> None:
    flow = Flow("slowpoke")
    started, release = anyio.Event(), anyio.Event()

    @flow.task
    def first() -> int:
        clock.advance(4)
        return 1

    @flow.task
    async def second(first: int) -> int:
        started.set()
        await release.wait()
        return first

    async with (
        make_runner() as runner,
        open_api(runner, {"slowpoke": flow}) as api,
        anyio.create_task_group() as group,
    ):
        group.start_soon(runner.run, flow)
        with anyio.fail_after(WAIT):
            await started.wait()
        clock.advance(6)  # "now" is 6 s into the running attempt
        await runner.store.flush()
        status, html, _ = await get_page(api, "/runs/1")
        release.set()
    assert status == 200
    doc = parse(html)
    assert doc.by_id("run-state").state() == "running"
    assert doc.by_id("cancel").attrs["data-action"] == "/api/runs/1/cancel"
    assert not doc.find_all(id="retry")
    nodes = {g.attrs["data-task"]: g.state() for g in doc.by_id("dag").find_all("g", cls="node")}
    assert nodes == {"first": "succeeded", "second": "running"}
    bars = {b.attrs["data-task"]: b for b in doc.by_id("gantt").find_all("rect", cls="bar")}
    assert "live" in bars["second"].classes
    assert "live" not in bars["first"].classes
    # first took 4 s, second has run 6 s so far: the axis spans 10 s, second ends at its end
    end = float(bars["second"].attrs["x"]) + float(bars["second"].attrs["width"])
    assert end == pytest.approx(LABEL_W + PLOT_W, abs=0.1)
    assert float(bars["first"].attrs["width"]) == pytest.approx(PLOT_W * 0.4, abs=0.1)
