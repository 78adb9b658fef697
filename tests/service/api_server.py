"""The service's API server in process, on 127.0.0.1 and a free port, over a test runner
and flows defined in the test; the run queue does not run, so queued runs stay queued."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from runtime.config import Config
from runtime.define.flow import Flow
from runtime.engine.runner import Runner
from runtime.service.api.listen import ApiSettings, listen
from runtime.service.api.server import ApiServer
from runtime.service.api.streamclient import StreamLimits
from runtime.service.context import ServiceContext

TOKEN = "test-token-0123456789abcdef"


@dataclass(slots=True)
class Api:
    """A serving API: its base URL, the context its handlers use, the header to send."""

    url: str
    ctx: ServiceContext
    token: str | None
    server: ApiServer | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


@asynccontextmanager
async def open_api(
    runner: Runner,
    flows: Mapping[str, Flow],
    *,
    token: str | None = TOKEN,
    grace: float = 5.0,
    streams: StreamLimits | None = None,
) -> AsyncIterator[Api]:
    """Serve the API of a service context over *runner* and *flows* while the block runs
    (*streams*: the live stream's limits, the service's by default)."""
    ctx = ServiceContext(Config(db=runner.store.path), runner, dict(flows), epoch=1)
    listener = listen(ApiSettings("127.0.0.1", 0, token))
    server = ApiServer(ctx, listener, grace=grace, streams=streams)
    async with anyio.create_task_group() as group:
        await group.start(server.run)
        try:
            yield Api(listener.url, ctx, token, server)
        finally:
            group.cancel_scope.cancel()
