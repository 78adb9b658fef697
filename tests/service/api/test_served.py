"""The read API inside a real ``sluiceway serve`` over a generated history: what a user meets
with curl. The service migrates the history, answers the flows and the runs, and a run
queued through the API is seen going from queued to succeeded by polling its detail."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import anyio
import pytest
from history import generate

from tests.service.api.conftest import sql
from tests.service.api_server import TOKEN
from tests.service.served import Home
from tests.service.test_api_service import free_port
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # starts sluiceway serve as a subprocess

FLOWS = """
from runtime import Flow, cron

for name in ("orders", "billing", "clickstream"):
    flow = Flow(name, triggers=[cron("0 3 * * *")], params={"day": "today"})

    @flow.task
    def extract() -> int:
        return 1
"""


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


async def test_the_served_api_reads_a_long_history_and_follows_a_new_run(home: Home) -> None:
    generate(home.db, runs=600, flows=3, log_lines_per_task=1)
    (home.flows / "flows.py").write_text(FLOWS)
    port = free_port()
    served = home.serve(SLUICEWAY_API_BIND=f"127.0.0.1:{port}", SLUICEWAY_API_TOKEN=TOKEN)
    served.wait_ready()
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    failed = sql(home.db, "SELECT id FROM runs WHERE state = 'failed' ORDER BY id DESC")
    async with aiohttp.ClientSession(headers=headers) as session:
        status, flows = await _get(session, f"{url}/api/flows")
        assert status == 200, flows
        assert [f["name"] for f in flows["flows"]] == ["billing", "clickstream", "orders"]
        assert sum(f["runs"] for f in flows["flows"]) >= 600
        status, page = await _get(session, f"{url}/api/runs?state=failed&limit=500")
        assert status == 200, page
        listed = [run["id"] for run in page["runs"]]
        assert listed == sorted(listed, reverse=True)
        # the history's failed runs; a run the service resumed and failed may come on top
        assert set(failed) <= set(listed), (failed, listed)
        now_failed = sql(home.db, "SELECT id FROM runs WHERE state = 'failed'")
        assert set(listed) <= set(now_failed)
        async with session.post(f"{url}/api/flows/orders/runs", json={}) as resp:
            assert resp.status == 201
            run_id = (await resp.json())["id"]
        status, newest = await _get(session, f"{url}/api/runs?limit=1")
        assert newest["runs"][0]["id"] == run_id
        deadline = time.monotonic() + WAIT
        while True:
            status, run = await _get(session, f"{url}/api/runs/{run_id}")
            assert status == 200, run
            if run["state"] == "succeeded" or time.monotonic() > deadline:
                break
            await anyio.sleep(0.1)
        assert run["state"] == "succeeded", served.describe()
        assert [(a["task"], a["state"]) for a in run["attempts"]] == [("extract", "succeeded")]
        assert run["waiting"] == []
        status, missing = await _get(session, f"{url}/api/runs/999999")
        assert status == 404
        assert missing["error"]["code"] == "run_not_found"
