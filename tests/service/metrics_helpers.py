"""Serving the API with its metrics in process, scraping ``/metrics`` and reading samples from
the text as Prometheus parses it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import anyio
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from runtime.config import Config
from runtime.define.flow import Flow
from runtime.engine.runner import Runner
from runtime.service.api.listen import ApiSettings, listen
from runtime.service.api.server import ApiServer
from runtime.service.context import ServiceContext
from tests.service.api_server import TOKEN, Api

# every label name a series may carry: sets that grow with the configuration, not the history
BOUNDED_LABELS = frozenset({"flow", "state", "pool", "destination", "source", "severity", "le"})


@dataclass(slots=True)
class Served:
    """The API (URL, context, token) and its server (for its metrics object)."""

    api: Api
    server: ApiServer


@asynccontextmanager
async def serve_api(
    runner: Runner, flows: Mapping[str, Flow], *, config: Config | None = None
) -> AsyncIterator[Served]:
    """Serve the API over *runner*; the store's counts are read at every scrape (no cache)."""
    config = config or Config(db=runner.store.path)
    ctx = ServiceContext(config, runner, dict(flows), epoch=1)
    listener = listen(ApiSettings("127.0.0.1", 0, TOKEN))
    server = ApiServer(ctx, listener)
    server.metrics.cache = server.metrics.history_cache = 0.0
    async with anyio.create_task_group() as group:
        await group.start(server.run)
        try:
            yield Served(Api(listener.url, ctx, TOKEN), server)
        finally:
            group.cancel_scope.cancel()


class Scrape:
    """One scrape's families, parsed by prometheus-client's own parser."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families: list[Metric] = list(text_string_to_metric_families(text))

    def value(self, name: str, **labels: str) -> float | None:
        """The sample *name* (full sample name, e.g. ``..._total``) with exactly *labels*."""
        for family in self.families:
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None

    def names(self) -> set[str]:
        return {family.name for family in self.families}

    def check_well_formed(self) -> None:
        """Every family named sluiceway_*, every label name from a bounded set."""
        for family in self.families:
            assert family.name.startswith("sluiceway_"), family.name
            for sample in family.samples:
                assert sample.name.startswith("sluiceway_"), sample.name
                unbounded = set(sample.labels) - BOUNDED_LABELS - {"version", "python"}
                assert not unbounded, (sample.name, sample.labels)


async def scrape(api: Api, *, headers: Mapping[str, str] | None = None) -> Scrape:
    """GET /metrics with the token; must answer 200 in the text format."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(api.url + "/metrics", headers={**api.headers, **(headers or {})}) as resp,
    ):
        text = await resp.text()
        assert resp.status == 200, text
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4"), resp.headers
    return Scrape(text)
