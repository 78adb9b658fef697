"""The actions inside a real ``sluiceway serve``: a cancel through the API ends a running run,
a retry through the API is executed by the service (reusing what succeeded), and retention
prunes an old history at start."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from runtime.store import open_store
from tests.service.api_server import TOKEN
from tests.service.served import Home, Served
from tests.service.test_api_service import free_port
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess

FLOWS = """
from pathlib import Path

import anyio

from runtime import Flow, Run

HOME = Path(__file__).resolve().parent.parent

stuck = Flow("stuck")
flaky = Flow("flaky")


def note(line: str) -> None:
    with open(HOME / "ledger.txt", "a") as fh:
        fh.write(line + "\\n")


@stuck.task
async def wait_forever(run: Run) -> None:
    note(f"{run.id} wait_forever started")
    await anyio.sleep(3600)


@flaky.task
def extract(run: Run) -> int:
    note(f"{run.id} extract")
    return 7


@flaky.task
def load(run: Run, extract: int) -> None:
    note(f"{run.id} load")
    run.log.info("loading %d rows into the warehouse", extract)
    if not (HOME / "fixed").exists():
        raise RuntimeError("warehouse refused the rows")
"""


class Client:
    """The served API over one aiohttp session, with the token."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body or {}) as resp:
            return resp.status, await resp.json()

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url + path) as resp:
            return resp.status, await resp.json()


def start(home: Home, **env: str) -> tuple[Served, str]:
    (home.flows / "flows.py").write_text(FLOWS)
    port = free_port()
    served = home.serve(SLUICEWAY_API_BIND=f"127.0.0.1:{port}", SLUICEWAY_API_TOKEN=TOKEN, **env)
    served.wait_ready()
    return served, f"http://127.0.0.1:{port}"


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})


def run_state(home: Home, run_id: int, *states: str) -> str:
    rows = home.wait_rows(
        "SELECT state FROM runs WHERE id = ?",
        run_id,
        what=f"run {run_id} in {states}",
        until=lambda rows: bool(rows) and rows[0][0] in states,
    )
    return str(rows[0][0])


def stop(served: Served) -> str:
    served.send(signal.SIGTERM)
    assert served.wait_exit(WAIT) == 0, served.describe()
    log = served.log()
    assert "Traceback" not in log, log
    return log


async def test_a_cancel_through_the_api_ends_a_running_run(home: Home) -> None:
    served, url = start(home)
    async with session() as http:
        api = Client(http, url)
        status, run = await api.post("/api/flows/stuck/runs")
        assert status == 201
        home.wait_lines("ledger.txt", f"{run['id']} wait_forever started")
        status, answer = await api.post(f"/api/runs/{run['id']}/cancel")
        assert status == 200
        assert answer == {"run_id": run["id"], "outcome": "requested", "state": "running"}
        assert run_state(home, run["id"], "cancelled", "failed", "succeeded") == "cancelled"
        status, again = await api.post(f"/api/runs/{run['id']}/cancel")
    assert again == {"run_id": run["id"], "outcome": "ended", "state": "cancelled"}
    assert home.task(run["id"], "wait_forever")["state"] == "cancelled"
    stop(served)


async def test_a_retry_through_the_api_is_executed_by_the_service(home: Home) -> None:
    served, url = start(home)
    async with session() as http:
        api = Client(http, url)
        _, run = await api.post("/api/flows/flaky/runs")
        assert run_state(home, run["id"], "failed", "succeeded") == "failed"
        status, refused = await api.post(f"/api/runs/{run['id']}/retry")
        assert status == 201  # nothing fixed yet: this retry fails too
        assert run_state(home, refused["id"], "failed", "succeeded") == "failed"
        (home.root / "fixed").touch()
        status, retry = await api.post(f"/api/runs/{refused['id']}/retry")
        assert status == 201
        assert retry["retry_of"] == refused["id"]
        assert run_state(home, retry["id"], "failed", "succeeded") == "succeeded"
        status, found = await api.get(f"/api/logs/search?q=warehouse+rows&run={retry['id']}")
    assert status == 200
    assert [hit["task"] for hit in found["hits"]] == ["load"]
    lines = (home.root / "ledger.txt").read_text().splitlines()
    # extract ran once, in the first run: both retries reused its stored result
    assert [line for line in lines if line.endswith("extract")] == [f"{run['id']} extract"]
    assert f"{retry['id']} load" in lines
    stop(served)


async def _old_history(db: Path) -> None:
    async with open_store(db) as store:
        await store.writer.submit(
            lambda conn: conn.executemany(
                "INSERT INTO runs (flow, state, logical_date, created_at, ended_at) "
                "VALUES ('flaky', 'succeeded', ?, ?, ?)",
                [("2026-01-01T00:00:00Z",) * 3, ("2026-01-02T00:00:00Z",) * 3],
            )
        )
        await store.writer.submit(
            lambda conn: conn.execute(
                "INSERT INTO logs (run_id, ts, level, message) VALUES "
                "(1, '2026-01-01T00:00:00Z', 'INFO', 'an old line')"
            )
        )


async def test_the_service_prunes_an_old_history_at_start(home: Home) -> None:
    await _old_history(home.db)
    served, url = start(home, SLUICEWAY_HISTORY_RETENTION="30d")
    served.wait_log("retention: pruned 2 runs (1 log lines)")
    assert home.query("SELECT count(*) FROM runs") == [(0,)]
    async with session() as http:
        status, found = await Client(http, url).get("/api/logs/search?q=old+line")
    assert (status, found) == (200, {"hits": [], "next_cursor": None})
    stop(served)
