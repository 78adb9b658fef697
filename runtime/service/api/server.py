"""The API server as one of the service's feeders: it serves on the socket bound before the
service started, and on stop closes it first, then gives requests in flight a short grace."""

from __future__ import annotations

import logging

import anyio
from aiohttp import web
from anyio.abc import TaskStatus

from runtime.service.api.app import make_app
from runtime.service.api.listen import Listener
from runtime.service.api.monitoring import METRICS, ROUTE_TABLE
from runtime.service.api.routes import ROUTES
from runtime.service.api.stream import attach_streams
from runtime.service.api.streamclient import StreamLimits
from runtime.service.api.streams import StreamHub
from runtime.service.context import ServiceContext
from runtime.service.metrics.hub import ServiceMetrics

log = logging.getLogger("sluiceway.runtime.api")

GRACE = 5.0  # seconds requests in flight get to finish when the service stops


class ApiServer:
    """Serves the API of the service *ctx* on *listener* until cancelled.

    Requests are handled in aiohttp's own tasks, which the runner owns: its cleanup (run
    shielded when the feeders are cancelled) stops accepting, waits up to :data:`GRACE` for
    the requests in flight and closes every connection, so nothing is left behind. Live
    streams (``/api/stream``) never wait that grace: they end when the server stops.

    Its :class:`ServiceMetrics` listens to the bus from construction (the service makes the
    server before it resumes or starts any run) until :meth:`run` ends: only a service
    with ``[api]`` pays for counting events.
    """

    def __init__(
        self,
        ctx: ServiceContext,
        listener: Listener,
        grace: float = GRACE,
        streams: StreamLimits | None = None,
    ) -> None:
        self.ctx = ctx
        self.listener = listener
        self.grace = grace
        self.metrics = ServiceMetrics(ctx)
        self.metrics.attach()
        self.app: web.Application | None = None  # while it serves (tests read its router)
        self.streams = streams or StreamLimits()
        self.hub: StreamHub | None = None  # the live streams' hub, while serving

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve; started once the socket accepts requests; until cancelled."""
        app = make_app(self.ctx, self.listener.settings, ROUTES)
        app[METRICS] = self.metrics
        app[ROUTE_TABLE] = ROUTES
        self.app = app
        streams = self.hub = attach_streams(app, self.ctx, self.streams)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=self.grace
        )
        await runner.setup()
        try:
            # the live streams' jobs stop first: open streams end at once, not after the grace
            async with anyio.create_task_group() as group:
                await group.start(streams.run, name="api streams")
                await web.SockSite(runner, self.listener.sock).start()
                settings = self.listener.settings
                auth = "bearer token" if settings.auth else "no auth (loopback)"
                if settings.auth:
                    auth += " or dashboard login" + (" with password" if settings.password else "")
                log.info("api listening on %s (%s)", self.listener.url, auth)
                group.start_soon(self.metrics.lag.run, name="api: event-loop lag")
                task_status.started()
                await anyio.sleep_forever()
        finally:
            self.metrics.detach()
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.grace + 1):
                await runner.cleanup()
            self.listener.close()
            log.info("api stopped")
