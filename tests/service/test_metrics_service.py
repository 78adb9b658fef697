"""/metrics inside a real ``sluiceway serve``: a run queued over the API moves the counters,
the lag probe samples, the scrape needs the token, and SIGTERM still stops cleanly."""

from __future__ import annotations

import signal
import time

import aiohttp
import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.service.api_server import TOKEN
from tests.service.metrics_helpers import Scrape
from tests.service.served import Home
from tests.service.test_api_service import free_port
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # starts sluiceway serve as a subprocess

FLOWS = """
from runtime import Flow

report = Flow("report", params={"region": "eu"})


@report.task
def build() -> None:
    pass
"""


async def test_a_run_through_the_api_shows_in_metrics(home: Home) -> None:
    (home.flows / "flows.py").write_text(FLOWS)
    port = free_port()
    served = home.serve(SLUICEWAY_API_BIND=f"127.0.0.1:{port}", SLUICEWAY_API_TOKEN=TOKEN)
    served.wait_ready()
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as resp:
            assert resp.status == 401
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        async with session.post(f"{url}/api/flows/report/runs", json={}) as resp:
            assert resp.status == 201
        deadline = time.monotonic() + WAIT
        while True:
            async with session.get(f"{url}/metrics") as resp:
                assert resp.status == 200
                scraped = Scrape(await resp.text())
            ended = scraped.value("sluiceway_runs_ended_total", flow="report", state="succeeded")
            lag = scraped.value("sluiceway_event_loop_lag_seconds_count")
            if ended == 1 and lag:
                break
            assert time.monotonic() < deadline, scraped.text
            await anyio.sleep(0.2)  # another process: polled, with a deadline
    scraped.check_well_formed()
    assert scraped.value("sluiceway_task_attempts_total", flow="report", state="succeeded") == 1
    assert scraped.value("sluiceway_flows_loaded") == 1
    assert list(text_string_to_metric_families(scraped.text))
    served.send(signal.SIGTERM)
    assert served.wait_exit(WAIT) == 0
    for bad in ("Traceback", "Unclosed", "ERROR"):
        assert bad not in served.log(), served.log()
