"""The API's start-up checks (``[api]`` settings, binding) and what every route gets from the
application: a 500 that names nothing, and routes added to the table served the same way."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from runtime.config import ApiConfig, Config
from runtime.errors import ConfigError, StoreError
from runtime.service.api.app import make_app
from runtime.service.api.listen import ApiSettings, api_settings, is_loopback, listen
from runtime.service.api.routes import ROUTES
from runtime.service.context import ServiceContext
from tests.conftest import MakeRunner
from tests.service.api_server import TOKEN

# --- settings ---


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("api.example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_no_bind_is_no_server() -> None:
    assert api_settings(ApiConfig()) is None


def test_a_bind_without_a_token_refuses_naming_both_settings() -> None:
    with pytest.raises(ConfigError) as caught:
        api_settings(ApiConfig(bind="127.0.0.1:8765"))
    message = str(caught.value)
    assert "[api] token" in message
    assert "SLUICEWAY_API_TOKEN" in message
    assert "'127.0.0.1:8765'" in message


@pytest.mark.parametrize("bind", ["0.0.0.0:8765", "[::]:8765", "10.0.0.5:80", "api.lan:8765"])
def test_auth_none_off_loopback_refuses(bind: str) -> None:
    with pytest.raises(ConfigError, match=r'auth = "none" .* only allowed on a loopback bind'):
        api_settings(ApiConfig(bind=bind, auth="none"))


@pytest.mark.parametrize(
    ("bind", "host"),
    [("127.0.0.1:8765", "127.0.0.1"), ("[::1]:8765", "::1"), ("localhost:1", "localhost")],
)
def test_auth_none_on_loopback_serves_without_token(bind: str, host: str) -> None:
    settings = api_settings(ApiConfig(bind=bind, auth="none", token="ignored-when-none"))
    assert settings is not None
    assert (settings.host, settings.auth) == (host, False)


def test_a_token_is_required_and_kept_out_of_repr() -> None:
    settings = api_settings(ApiConfig(bind="127.0.0.1:8765", token=TOKEN))
    assert settings == ApiSettings("127.0.0.1", 8765, TOKEN)
    assert TOKEN not in repr(settings)


def test_a_short_token_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "sluiceway.runtime.api"):
        api_settings(ApiConfig(bind="127.0.0.1:8765", token="short"))
    assert "[api] token is shorter than 16 characters" in caplog.text
    assert "short" not in caplog.text.replace("shorter", "")


# --- binding ---


def test_a_busy_port_refuses_naming_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            listen(ApiSettings("127.0.0.1", port, TOKEN))
    assert str(caught.value) == (
        f"[api] bind = '127.0.0.1:{port}': cannot listen there: Address already in use"
    )


def test_the_socket_is_bound_to_the_host_given_only() -> None:
    listener = listen(ApiSettings("127.0.0.1", 0, TOKEN))
    try:
        host, port = listener.sock.getsockname()
        assert host == "127.0.0.1"
        assert listener.url == f"http://127.0.0.1:{port}"
    finally:
        listener.close()
        listener.close()  # twice is fine


# --- the application ---


async def _post_to_added_route(
    make_runner: MakeRunner, db_path: Path, handler: Any
) -> tuple[int, int, str, dict[str, str]]:
    """Serve the API with *handler* added at POST /api/added; (status without the token,
    status with it, its body, its headers)."""
    async with make_runner() as runner:
        ctx = ServiceContext(Config(db=db_path), runner, {}, epoch=1)
        app = make_app(ctx, ApiSettings("127.0.0.1", 0, TOKEN), ROUTES)
        app.router.add_post("/api/added", handler)  # a route added the way the table adds them
        app_runner = web.AppRunner(app, access_log=None)
        await app_runner.setup()
        site = web.TCPSite(app_runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = app_runner.addresses[0][1]
            url = f"http://127.0.0.1:{port}/api/added"
            async with aiohttp.ClientSession() as session:
                async with session.post(url) as resp:
                    anonymous = resp.status
                headers = {"Authorization": f"Bearer {TOKEN}"}
                async with session.post(url, headers=headers) as resp:
                    return anonymous, resp.status, await resp.text(), dict(resp.headers)
        finally:
            await app_runner.cleanup()


async def test_an_unexpected_error_is_a_500_without_details_and_logged_with_traceback(
    make_runner: MakeRunner, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail /etc/sluiceway.toml")

    with caplog.at_level(logging.ERROR, "sluiceway.runtime.api"):
        anonymous, status, text, _ = await _post_to_added_route(make_runner, db_path, broken)
    assert anonymous == 401  # auth comes first, for added routes too
    assert status == 500
    assert text == (
        '{"error":{"code":"internal","message":"internal error; the service log has the details"}}'
    )
    assert "POST /api/added failed" in caplog.text
    assert "RuntimeError: secret detail" in caplog.text  # the traceback, in the log only


async def test_a_store_that_cannot_commit_is_a_503_to_retry(
    make_runner: MakeRunner, db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def locked(request: web.Request) -> web.Response:
        raise StoreError(f"{db_path}: cannot commit (OperationalError: database is locked)")

    with caplog.at_level(logging.ERROR, "sluiceway.runtime.api"):
        _, status, text, headers = await _post_to_added_route(make_runner, db_path, locked)
    assert status == 503
    assert headers["Retry-After"] == "5"
    error = orjson.loads(text)["error"]
    assert error["code"] == "unavailable"
    assert "nothing was queued; try again" in error["message"]
    assert str(db_path) not in text
    assert "database is locked" in caplog.text
