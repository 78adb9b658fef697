"""The API inside a real ``sluiceway serve``: refusals at start (exit 2, one line), runs and
events that the service then executes, a 2 MiB chunked body, and a clean SIGTERM."""

from __future__ import annotations

import signal
import socket
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest

from tests.service.api_server import TOKEN
from tests.service.served import Home
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess

FLOWS = """
from pathlib import Path

from runtime import Flow, Run, on_event

HOME = Path(__file__).resolve().parent.parent

report = Flow("report", triggers=[on_event("orders.landed")], params={"region": "eu"})
archive = Flow("archive", triggers=[on_event("orders.landed")])


@report.task
def build(run: Run) -> None:
    with open(HOME / "seen.txt", "a") as fh:
        fh.write(f"{run.id} {run.flow} {run.trigger.kind} {run.params['region']}\\n")


@archive.task
def store(run: Run) -> None:
    with open(HOME / "seen.txt", "a") as fh:
        fh.write(f"{run.id} {run.flow} {run.trigger.kind} {run.trigger.payload['file']}\\n")
"""


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


def refused(home: Home, env: dict[str, str]) -> str:
    """Start the service with *env*; it must exit 2 before it is ready: its stderr."""
    served = home.serve(**env)
    assert served.wait_exit(WAIT) == 2, served.describe()
    log = served.log()
    assert "service ready" not in log
    assert "Traceback" not in log
    return log


def test_serve_refuses_an_api_other_machines_reach_without_a_token(home: Home) -> None:
    (home.flows / "flows.py").write_text(FLOWS)
    log = refused(home, {"SLUICEWAY_API_BIND": "0.0.0.0:8765"})
    assert log.strip() == (
        "sluiceway: [api] bind = '0.0.0.0:8765' needs a token: set [api] token or "
        'SLUICEWAY_API_TOKEN (or auth = "none" on a loopback bind)'
    )
    assert not home.db.exists()  # refused before anything was written
    assert list(home.root.glob("*.api-token")) == []  # no token is made up for it


def test_serve_refuses_auth_none_on_every_interface(home: Home) -> None:
    log = refused(home, {"SLUICEWAY_API_BIND": "0.0.0.0:8765", "SLUICEWAY_API_AUTH": "none"})
    assert "only allowed on a loopback bind" in log
    assert "'0.0.0.0:8765'" in log


def test_serve_refuses_a_port_in_use(home: Home) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        env = {"SLUICEWAY_API_BIND": f"127.0.0.1:{port}", "SLUICEWAY_API_TOKEN": TOKEN}
        log = refused(home, env)
    assert f"[api] bind = '127.0.0.1:{port}': cannot listen there: Address already in use" in log


async def _big_body() -> AsyncIterator[bytes]:
    for _ in range(32):  # 2 MiB in 64 KiB chunks
        yield b"x" * (64 << 10)


async def test_runs_and_events_through_the_api_are_executed_and_sigterm_stops_cleanly(
    home: Home,
) -> None:
    (home.flows / "flows.py").write_text(FLOWS)
    port = free_port()
    served = home.serve(SLUICEWAY_API_BIND=f"127.0.0.1:{port}", SLUICEWAY_API_TOKEN=TOKEN)
    served.wait_log(f"api listening on http://127.0.0.1:{port} (bearer token or dashboard login)")
    served.wait_ready()
    url = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        body = orjson.dumps({"params": {"region": "us"}, "idempotency_key": "r1"})
        async with session.post(f"{url}/api/flows/report/runs", data=body) as resp:
            assert resp.status == 201
            run = await resp.json()
        async with session.post(f"{url}/api/events/orders.landed", json={"file": "o.csv"}) as resp:
            assert resp.status == 201
            runs = (await resp.json())["runs"]
        async with session.post(f"{url}/api/events/orders.landed", data=_big_body()) as resp:
            too_large = resp.status
        async with session.get(f"{url}/healthz") as resp:
            alive = resp.status
    assert (too_large, alive) == (413, 200)
    ids = {run["id"], *(r["id"] for r in runs)}
    report_event = next(r["id"] for r in runs if r["flow"] == "report")
    archive_event = next(r["id"] for r in runs if r["flow"] == "archive")
    home.wait_lines(
        "seen.txt",
        f"{run['id']} report api us",
        f"{report_event} report event eu",
        f"{archive_event} archive event o.csv",
    )
    # a task's line is written before its run's end is committed (a batch later): wait for it
    home.wait_rows(
        "SELECT id FROM runs WHERE state = 'succeeded'",
        what="the three runs succeeded",
        until=lambda rows: {i for (i,) in rows} == ids,
    )
    assert home.query("SELECT count(*) FROM runs") == [(3,)]

    served.send(signal.SIGTERM)
    assert served.wait_exit(WAIT) == 0
    log = served.log()
    assert "api stopped" in log
    assert log.index("api stopped") < log.index("service stopped")
    for bad in ("Traceback", "Unclosed", "ERROR"):
        assert bad not in log, log
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
