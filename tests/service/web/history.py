"""A run history made by the real runner for the page tests: a flow with a mapped task, a
retry, a failed check and a failure; a hostile flow whose params and log lines carry markup;
and the API served over it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from runtime import Flow, Run
from runtime.define.result import RunResult
from runtime.testing import FakeClock
from tests.conftest import MakeRunner
from tests.service.api_server import Api, open_api

HOSTILE = "<script>alert(1)</script>"
BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def shop_flow(clock: FakeClock) -> Flow:
    """extract -> load (mapped over 3 items; item 1 fails once, then succeeds) -> report
    (fails when ``fail``), and audit beside it; two levels apart, a long edge
    extract -> report."""
    shop = Flow(
        "shop",
        description="orders from the shop",
        params={"region": "eu", "n": 3, "ratio": 0.5, "dry": False, "tags": ["a"], "fail": False},
    )
    tries: dict[tuple[int, int], int] = {}

    @shop.task
    def extract(run: Run) -> list[int]:
        clock.advance(2)
        run.log.info("extracted %d orders from region %s", 3, run.params["region"])
        return [0, 1, 2]

    @shop.task(map="extract", retries=2, retry_delay="5s")
    def load(run: Run, extract: int) -> int:
        key = (run.id, extract)
        tries[key] = tries.get(key, 0) + 1
        clock.advance(1)
        if extract == 1 and tries[key] == 1:
            raise ConnectionError(f"warehouse busy for item {extract}")
        run.log.info("loaded item %d", extract)
        return extract * 10

    @shop.task
    def audit(run: Run, extract: list[int]) -> int:
        run.check("row_count", len(extract) > 0, detail=f"{len(extract)} rows")
        run.check("freshness", False, detail="2 h old", severity="warn")
        return len(extract)

    @shop.task
    def report(run: Run, load: list[int], audit: int, extract: list[int]) -> int:
        clock.advance(3)
        if run.params["fail"]:
            run.log.error("report failed for region %s", run.params["region"])
            raise ValueError("report: totals do not add up")
        run.log.info("report done: %d", sum(load))
        return sum(load) + audit

    return shop


def hostile_flow() -> Flow:
    flow = Flow("hostile", params={"note": HOSTILE})

    @flow.task
    def shout(run: Run) -> None:
        run.log.warning("user said %s", run.params["note"])
        raise RuntimeError(HOSTILE)

    return flow


@dataclass(slots=True)
class History:
    api: Api
    ok: RunResult
    failed: RunResult
    hostile: RunResult
    flows: dict[str, Flow]


@asynccontextmanager
async def open_history(make_runner: MakeRunner, clock: FakeClock) -> AsyncIterator[History]:
    """Runs of ``shop`` (one that succeeds after a retry, one that fails) and ``hostile``,
    then the API over them."""
    shop, hostile = shop_flow(clock), hostile_flow()
    flows = {"shop": shop, "hostile": hostile}
    async with make_runner() as runner:
        ok = await runner.run(shop)
        clock.advance(60)
        failed = await runner.run(shop, {"fail": True, "region": "us"})
        clock.advance(60)
        bad = await runner.run(hostile)
        await runner.store.flush()
        async with open_api(runner, flows) as api:
            yield History(api, ok, failed, bad, flows)


async def get_page(
    api: Api, path: str, *, headers: dict[str, str] | None = None
) -> tuple[int, str, aiohttp.ClientResponse]:
    """GET *path* as a browser would (Accept: text/html), with the bearer token."""
    sent: dict[str, Any] = {**BROWSER, **api.headers, **(headers or {})}
    async with aiohttp.ClientSession() as http, http.get(api.url + path, headers=sent) as resp:
        return resp.status, await resp.text(), resp
