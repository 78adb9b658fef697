"""The service's metrics: one registry of its own (never prometheus-client's global one, so
several services in one process do not share series), the bus recorder, the lag probe and the
store's counts, refreshed at most every :data:`CACHE` seconds however often it is scraped."""

from __future__ import annotations

import platform
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from runtime.service.context import ServiceContext
from runtime.service.metrics.collector import SnapshotCollector
from runtime.service.metrics.frozen import Freezer
from runtime.service.metrics.lag import LagProbe
from runtime.service.metrics.recorder import BusRecorder
from runtime.store.gauges import StoreGauges, read_ended, read_gauges

CACHE = 2.0  # seconds the store's counts are reused: two scrapers cost one read
HISTORY_CACHE = 60.0  # seconds the counts of ended runs are reused (a scan of every run)

# runs fn(conn, *args) on a read connection (the API's Reader)
Read = Callable[..., Awaitable[Any]]


def package_version() -> str:
    """The installed version of sluiceway (``unknown`` when run from a bare checkout)."""
    try:
        return version("sluiceway")
    except PackageNotFoundError:
        return "unknown"


class _BuildInfo(Collector):
    def collect(self) -> list[Metric]:
        # prometheus-client's PlatformCollector says the same as python_info: not sluiceway_*
        info = GaugeMetricFamily(
            "sluiceway_build_info",
            "the running versions of sluiceway and python (always 1)",
            labels=["version", "python"],
        )
        info.add_metric([package_version(), platform.python_version()], 1)
        return [info]


class ServiceMetrics:
    """Everything ``/metrics`` serves for the service *ctx*.

    The recorder listens to the bus only between :meth:`attach` and :meth:`detach` (the API
    server does both), so a service without ``[api]`` pays nothing per event.
    """

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.recorder = BusRecorder()
        self.lag = LagProbe()
        self.snapshot: StoreGauges | None = None
        self.ended: list[tuple[str, str, int]] | None = None  # ended runs by flow, state
        self.cache = CACHE  # seconds the store's counts are reused
        self.history_cache = HISTORY_CACHE  # seconds the ended runs' counts are reused
        self._read_at: float | None = None
        self._ended_at: float | None = None
        self._lock = anyio.Lock()
        self._unsubscribe: Callable[[], None] | None = None
        self._freezer = Freezer(ctx, self.recorder, self.lag)
        self._current = SnapshotCollector()
        self.registry = CollectorRegistry()
        self.registry.register(_BuildInfo())
        self.registry.register(self._current)
        # CPU seconds, resident memory, open file descriptors (Linux /proc; nothing elsewhere)
        ProcessCollector(namespace="sluiceway", registry=self.registry)

    def attach(self) -> None:
        """Start counting the service's bus events."""
        if self._unsubscribe is None:
            self._unsubscribe = self.ctx.runner.bus.subscribe(self.recorder.on_event)

    def detach(self) -> None:
        """Stop counting (the counts so far stay)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    async def refresh(self, read: Read) -> None:
        """Read the store's counts through *read*, unless the last read is under
        :attr:`cache` seconds old (concurrent scrapes wait for one read)."""
        async with self._lock:
            await self._refresh(read)

    async def _refresh(self, read: Read) -> None:
        if _due(self._read_at, self.cache):
            now = self.ctx.clock.now().timestamp()
            self.snapshot = await read(read_gauges, now)
            self._read_at = time.monotonic()
        if _due(self._ended_at, self.history_cache):
            self.ended = await read(read_ended)
            self._ended_at = time.monotonic()

    async def scrape(self, read: Read, accept: str | None) -> tuple[bytes, str]:
        """(body, content type) of every series, the store's counts refreshed through *read*
        if due: the numbers are copied on the loop, the text is built in a worker thread
        (a few thousand series take milliseconds). One scrape at a time."""
        async with self._lock:
            await self._refresh(read)
            self._current.frozen = self._freezer.freeze(self.snapshot, self.ended)
            encoder, content_type = choose_encoder(accept or "")
            body: bytes = await anyio.to_thread.run_sync(encoder, self.registry)
        return body, content_type

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """:meth:`scrape` without the store's refresh, all in the calling thread (benches);
        the Prometheus text format, or OpenMetrics when *accept* asks for it."""
        self._current.frozen = self._freezer.freeze(self.snapshot, self.ended)
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _due(last: float | None, every: float) -> bool:
    return last is None or time.monotonic() - last >= every
