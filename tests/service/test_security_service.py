"""Security inside a real ``sluiceway serve``: the quick start (a loopback bind without a
token gets one, the login form and ``sluiceway emit`` use it), ``/readyz``, and a bad
``[api] password_hash`` refusing the start."""

from __future__ import annotations

import re
import signal
import stat

import aiohttp
import pytest

from runtime.service.api.sessions import COOKIE
from tests.cli_helpers import sluiceway
from tests.service.served import Home
from tests.service.test_api_service import free_port, refused
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess

FLOWS = """
from runtime import Flow, on_event

landed = Flow("landed", triggers=[on_event("orders.landed")])


@landed.task
def noop() -> None:
    pass
"""


async def _ready(url: str) -> dict[str, object] | None:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as response:
        body: dict[str, object] = await response.json()
        return body if response.status == 200 else None


async def test_the_quick_start_token_logs_in_and_readyz_turns_ready(home: Home) -> None:
    (home.flows / "flows.py").write_text(FLOWS)
    port = free_port()
    served = home.serve(SLUICEWAY_API_BIND=f"127.0.0.1:{port}")
    served.wait_ready()
    url = f"http://127.0.0.1:{port}"
    assert await _ready(url) == {"ready": True, "flows": 1}
    path = home.root / "history.db.api-token"
    token = path.read_text().strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    log = served.log()
    assert f"using the generated token in {path}" in log
    assert token not in log

    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as http:
        async with http.get(url + "/login") as form:
            html = await form.text()
        assert str(path) in html  # the form says where the token is, never the token
        assert token not in html
        found = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert found is not None
        data = {"secret": token, "csrf_token": found.group(1), "next": "/runs"}
        async with http.post(url + "/login", data=data, allow_redirects=False) as answer:
            assert answer.status == 303
            assert answer.headers["Location"] == "/runs"
            assert COOKIE in answer.cookies

    # sluiceway emit finds the generated token too
    env = {"SLUICEWAY_API_BIND": f"127.0.0.1:{port}"}
    where = ["--flows", str(home.flows), "--db", str(home.db)]
    done = sluiceway("emit", "orders.landed", *where, cwd=home.root, env=env)
    assert done.returncode == 0, done.stderr
    assert "does not answer" not in done.stderr  # through the API, not around it
    home.wait_rows(
        "SELECT id FROM runs WHERE state = 'succeeded'",
        what="the emitted run succeeded",
        until=lambda rows: len(rows) == 1,
    )

    served.send(signal.SIGTERM)
    assert served.wait_exit(WAIT) == 0


def test_a_bad_password_hash_refuses_the_start_naming_the_key(home: Home) -> None:
    (home.flows / "flows.py").write_text(FLOWS)
    env = {
        "SLUICEWAY_API_BIND": f"127.0.0.1:{free_port()}",
        "SLUICEWAY_API_TOKEN": "a-token-long-enough-0123",
        "SLUICEWAY_API_PASSWORD_HASH": "hunter2-not-a-hash",
    }
    log = refused(home, env)
    assert log.strip().startswith("sluiceway: [api] password_hash is not a hash made by")
    assert "hunter2" not in log
    assert len(log.strip().splitlines()) == 1
