"""The dashboard's vendored files over a real server: versioned URLs cached for a year, a
304 for a known ETag, and nothing served that is not one of the files (no path reaches the
filesystem)."""

from __future__ import annotations

import aiohttp
import pytest

from runtime import Flow
from runtime.service.web.static import files, static_url
from tests.conftest import MakeRunner
from tests.service.api_server import open_api


async def test_static_files_are_versioned_and_cached(make_runner: MakeRunner) -> None:
    async with (
        make_runner() as runner,
        open_api(runner, {"f": Flow("f")}) as api,
        aiohttp.ClientSession() as http,
    ):
        url = api.url + static_url("app.css")
        async with http.get(url, headers=api.headers) as response:
            assert response.status == 200
            assert response.content_type == "text/css"
            assert "immutable" in response.headers["Cache-Control"]
            assert await response.read() == files()["app.css"].body
            etag = response.headers["ETag"]
        headers = {**api.headers, "If-None-Match": etag}
        async with http.get(url, headers=headers) as response:
            assert response.status == 304


@pytest.mark.parametrize(
    "name", ["nothing.css", "..%2Fstatic.py", "%2e%2e%2f%2e%2e%2fpyproject.toml", "static.py"]
)
async def test_only_the_vendored_files_are_served(make_runner: MakeRunner, name: str) -> None:
    async with (
        make_runner() as runner,
        open_api(runner, {"f": Flow("f")}) as api,
        aiohttp.ClientSession() as http,
        http.get(f"{api.url}/static/{name}", headers=api.headers) as response,
    ):
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "not_found"
