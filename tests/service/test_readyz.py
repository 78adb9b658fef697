"""``GET /readyz`` in process (the states the service context goes through), and the quick
start's generated token (a loopback bind without one)."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import aiohttp
import pytest

from runtime import Flow
from runtime.config import ApiConfig
from runtime.errors import ConfigError
from runtime.redact import redact
from runtime.service.api.listen import open_listener, token_file, with_generated_token
from tests.conftest import MakeRunner
from tests.service.api_server import TOKEN, open_api

FLOWS = {"a": Flow("a"), "b": Flow("b")}


async def readyz(url: str) -> tuple[int, object, str | None]:
    async with aiohttp.ClientSession() as http, http.get(url + "/readyz") as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


async def test_readyz_says_what_the_service_waits_for_until_it_is_ready(
    make_runner: MakeRunner,
) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        seen = [await readyz(api.url)]
        api.ctx.waiting_for = "start"
        seen.append(await readyz(api.url))
        api.ctx.ready = True
        seen.append(await readyz(api.url))
        api.ctx.stopping = True
        seen.append(await readyz(api.url))
    assert seen == [
        (503, {"ready": False, "waiting_for": "recovery"}, "1"),
        (503, {"ready": False, "waiting_for": "start"}, "1"),
        (200, {"ready": True, "flows": 2}, None),
        (503, {"ready": False, "waiting_for": "stopping"}, "1"),
    ]


async def test_readyz_needs_no_token(make_runner: MakeRunner) -> None:
    async with make_runner() as runner, open_api(runner, FLOWS) as api:
        api.ctx.ready = True
        status, _, _ = await readyz(api.url)  # readyz() sends no Authorization
    assert status == 200


# --- the quick start's token ---


def test_a_loopback_bind_without_a_token_gets_one_in_a_private_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "history.db"
    with caplog.at_level(logging.WARNING, "sluiceway.runtime.api"):
        config, path = with_generated_token(ApiConfig(bind="127.0.0.1:8765"), db)
    assert path == token_file(db) == tmp_path / "history.db.api-token"
    assert config.token is not None
    assert len(config.token) >= 32
    assert path.read_text().strip() == config.token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert str(path) in caplog.text
    assert config.token not in caplog.text  # where, never what
    assert config.token not in redact(f"token {config.token}")
    # the next start uses the same token
    again, _ = with_generated_token(ApiConfig(bind="localhost:8765"), db)
    assert again.token == config.token


@pytest.mark.parametrize(
    "config",
    [
        ApiConfig(),
        ApiConfig(bind="127.0.0.1:8765", token=TOKEN),
        ApiConfig(bind="127.0.0.1:8765", auth="none"),
        ApiConfig(bind="0.0.0.0:8765"),
        ApiConfig(bind="etl.lan:8765"),
    ],
    ids=["no-bind", "token-set", "auth-none", "wildcard", "name"],
)
def test_no_token_is_made_up_unless_it_is_a_loopback_bind_without_one(
    tmp_path: Path, config: ApiConfig
) -> None:
    assert with_generated_token(config, tmp_path / "h.db") == (config, None)
    assert list(tmp_path.iterdir()) == []


def test_a_token_file_others_can_read_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    with_generated_token(ApiConfig(bind="127.0.0.1:8765"), db)
    os.chmod(token_file(db), 0o644)
    with pytest.raises(ConfigError, match=r"readable by others .*chmod 600"):
        with_generated_token(ApiConfig(bind="127.0.0.1:8765"), db)


def test_the_listener_knows_where_its_generated_token_is(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    listener = open_listener(ApiConfig(bind="127.0.0.1:0"), db)
    assert listener is not None
    try:
        assert listener.settings.token_file == token_file(db)
        assert listener.settings.token == token_file(db).read_text().strip()
    finally:
        listener.close()
