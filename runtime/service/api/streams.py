"""The hub behind ``GET /api/stream``: who listens to what, and the few shared jobs that feed
them (the event bus, one poll for queued runs, one tail of the watched runs' log lines, one
ping ticker).

Costs: an event is encoded once and offered to the clients that want it (found by run and by
flow, not by asking every client); a client that waits costs nothing until something is sent
to it. The shared jobs run only while somebody listens, and each does one read whatever the
number of clients. The bus subscriber never awaits: it offers bytes to bounded per-client
buffers, and a client whose buffer is full is dropped (``event: resync``) rather than ever
slowing the engine down or growing memory.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from runtime.engine.events import Event, RunEnded, RunStarted
from runtime.errors import StoreError
from runtime.service.api import sse
from runtime.service.api.app import Reader
from runtime.service.api.recent import RecentRuns
from runtime.service.api.streamclient import Client, StreamLimits
from runtime.service.api.taillog import LogTail
from runtime.service.context import ServiceContext
from runtime.store import live

log = logging.getLogger("sluiceway.runtime.api")


class StreamHub:
    """The clients of ``GET /api/stream`` and the jobs that feed them; :meth:`run` is a child
    of the API server's task group."""

    def __init__(self, ctx: ServiceContext, reader: Reader, limits: StreamLimits) -> None:
        self.ctx = ctx
        self.reader = reader
        self.limits = limits
        self.everything: set[Client] = set()
        self.by_run: dict[int, set[Client]] = {}
        self.by_flow: dict[str, set[Client]] = {}
        self.tail = LogTail(reader, limits, ctx.store.writer.flush)
        self.recent = RecentRuns(limits.remember, limits.replay_window)
        self.count = 0  # open clients
        self.stopped = False
        self._listening = anyio.Event()  # set while there are clients
        self._unsubscribe: Callable[[], None] | None = None
        self._runs_after: int | None = None  # the queued-runs poll's last id
        self.baselined = anyio.Event()  # set once the queued-runs poll knows where it starts
        self._started: set[int] = set()  # runs the bus reported, above _runs_after

    # --- clients ---

    def open(self, *, run: int | None, flow: str | None, log_after: int | None) -> Client:
        """A new client with its filters: ``run`` (its events and log lines from
        *log_after* on), ``flow`` (its runs' events), or neither (every run's events). It
        gets every matching event from now on, until :meth:`close`."""
        send, receive = anyio.create_memory_object_stream[bytes](self.limits.queue)
        client = Client(run, flow, send, receive, self.limits.drop_after, log_after)
        if self.stopped:  # the service stops: the stream ends at once
            client.end()
            return client
        group = self._group(client, create=True)
        assert group is not None
        group.add(client)
        # what changed since its page was rendered comes first
        for data in self.recent.replay(run=run, flow=flow, cap=self.limits.queue // 2):
            client.offer(data)
        if run is not None:
            self.tail.join(client)
        self.count += 1
        self._listening.set()
        return client

    def close(self, client: Client) -> None:
        """Forget *client* (its handler ended); after the last one the shared jobs rest."""
        client.send.close()
        client.receive.close()
        group = self._group(client, create=False)
        if group is None or client not in group:
            return
        group.discard(client)
        if not group and client.run is not None:
            del self.by_run[client.run]
        elif not group and client.flow is not None:
            del self.by_flow[client.flow]  # the hub holds nothing for a flow nobody watches
        if client.run is not None:
            self.tail.leave(client)
        self.count -= 1
        if not self.count:
            self._listening = anyio.Event()

    def _group(self, client: Client, *, create: bool) -> set[Client] | None:
        index: dict[Any, set[Client]]
        key: Any
        if client.run is not None:
            index, key = self.by_run, client.run
        elif client.flow is not None:
            index, key = self.by_flow, client.flow
        else:
            return self.everything
        return index.setdefault(key, set()) if create else index.get(key)

    def clients(self) -> list[Client]:
        """Every open client."""
        return [
            c for g in (self.everything, *self.by_run.values(), *self.by_flow.values()) for c in g
        ]

    def end_all(self) -> None:
        """End every stream now and refuse new ones: the service stops (called from the
        app's ``on_shutdown`` too, so that aiohttp's cleanup never waits for a stream)."""
        self.stopped = True
        for client in self.clients():
            client.end()

    # --- fan-out ---

    def publish(self, frame: sse.Frame) -> None:
        """Offer *frame* to every client that wants it."""
        for client in self.everything:
            client.offer(frame.data)
        for client in self.by_flow.get(frame.flow, ()):
            client.offer(frame.data)
        for client in self.by_run.get(frame.run_id, ()):
            client.offer(frame.data)

    def _on_event(self, event: Event) -> None:
        # the bus calls this synchronously from the engine: no await, no I/O
        frame = sse.bus_frame(event)
        if frame is None:
            return
        self.recent.note(event, frame)
        if not self.count:
            return
        if isinstance(event, RunStarted | RunEnded):
            # the row may still read queued (the writer commits later): the queued-runs
            # poll must not send a run back to queued once the bus said it started
            if self._runs_after is None or event.run_id > self._runs_after:
                self._started.add(event.run_id)
            self.tail.run_changed(event.run_id, ended=isinstance(event, RunEnded))
        self.publish(frame)

    # --- the shared jobs ---

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Feed the clients until cancelled; then end every stream."""
        # always: the frames of recent runs are replayed to clients that connect later
        self._unsubscribe = self.ctx.runner.bus.subscribe(self._on_event)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._poll_runs, name="stream: queued runs")
                group.start_soon(self.tail.run, name="stream: log tail")
                group.start_soon(self._ping, name="stream: pings")
                task_status.started()
        finally:
            self.end_all()
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None

    async def ready(self) -> None:
        """Return once a run queued from now on will be announced (the queued-runs poll has
        read the last id), or after a few intervals if the store cannot be read."""
        with anyio.move_on_after(self.limits.runs_interval * 5):
            await self.baselined.wait()

    async def _ping(self) -> None:
        while True:
            await self._listening.wait()
            await anyio.sleep(self.limits.ping)
            for client in self.clients():
                client.offer(sse.PING)

    async def _poll_runs(self) -> None:
        """Runs queued by anyone (the scheduler, the API, a file, another process) are no
        bus events: one read per interval, for every client, finds the new ids."""
        failing = False
        while True:
            if not self.count:
                self._runs_after = None
                self._started.clear()
                self.baselined = anyio.Event()
                await self._listening.wait()
            try:
                await self._runs_once()
                failing = False
            except (sqlite3.Error, StoreError) as exc:  # locked or damaged: try again later
                if not failing:
                    log.warning("api stream: cannot read new runs: %s", exc)
                failing = True
            with anyio.move_on_after(self.limits.runs_interval):
                await self.ctx.queue_changed.wait()  # this process queued one: now

    async def _runs_once(self) -> None:
        if self._runs_after is None:
            self._runs_after = await self.reader(live.last_run_id)
            self._started = {run for run in self._started if run > self._runs_after}
            self.baselined.set()
            return
        rows = await self.reader(live.runs_after, self._runs_after, self.limits.batch)
        for row in rows:
            # a run the bus already reported started is past queued (the read raced it)
            if row.state == "queued" and row.id not in self._started:
                self.publish(sse.run_frame(row.id, row.flow, row.state, row.created_at))
        if rows:
            self._runs_after = rows[-1].id
            self._started = {run for run in self._started if run > self._runs_after}
