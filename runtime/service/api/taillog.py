"""The live stream's log tail: new log lines of the runs clients watch (``?run=``), read by one
shared poll.

Log lines are not bus events: the engine hands them to the store's writer and they get their
ids when committed, and the dashboard needs those ids (a page shows lines up to one id, the
stream sends the ones after it). So the tail reads what is committed: every
:attr:`~StreamLimits.log_interval` one read of the lines written since the last one, for all
watched runs that can still log, whatever the number of clients. A client that joins first
catches up from the id it names (``?after=``, or ``Last-Event-ID`` when a browser reconnects)
to where the shared tail stands, in its own read, before it gets the shared tail's lines:
each client sees its run's lines once, in order, with no gap.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from runtime.errors import StoreError
from runtime.service.api import sse
from runtime.service.api.app import Reader
from runtime.service.api.streamclient import Client, StreamLimits
from runtime.states import RunState
from runtime.store import live

log = logging.getLogger("sluiceway.runtime.api")

FLUSH_WITHIN = 5.0  # seconds the tail waits for the store to commit a run's last lines


@dataclass(slots=True)
class Watch:
    """The clients of one run, and whether the run can still log.

    :ivar live: the run is queued or running (``None``: not read yet)
    :ivar ending: the run just ended: one more read after the writer's flush, then not live
    """

    clients: set[Client] = field(default_factory=set)
    live: bool | None = None
    ending: bool = False

    @property
    def tailed(self) -> bool:
        return bool(self.live) or self.ending


class LogTail:
    """The shared tail of the watched runs' log lines; :meth:`run` is one of the hub's jobs.

    :param flush: returns once what this process queued for the store is committed (a run
        that just ended has its last lines read after it)
    """

    def __init__(
        self, reader: Reader, limits: StreamLimits, flush: Callable[[], Awaitable[None]]
    ) -> None:
        self.reader = reader
        self.limits = limits
        self.flush = flush
        self.watches: dict[int, Watch] = {}
        self.joiners: set[Client] = set()
        self.cursor: int | None = None  # every tailed line up to this id was handed out
        self._wake = anyio.Event()

    def join(self, client: Client) -> None:
        """Tail *client*'s run for it, from its ``log_after`` on."""
        assert client.run is not None
        self.watches.setdefault(client.run, Watch()).clients.add(client)
        self.joiners.add(client)
        self._wake.set()

    def leave(self, client: Client) -> None:
        assert client.run is not None
        self.joiners.discard(client)
        watch = self.watches.get(client.run)
        if watch is not None:
            watch.clients.discard(client)
            if not watch.clients:
                del self.watches[client.run]

    def run_changed(self, run_id: int, *, ended: bool) -> None:
        """The bus said a watched run started or ended (from the bus subscriber: no await)."""
        watch = self.watches.get(run_id)
        if watch is None:
            return
        if ended:
            watch.ending = True
        else:
            watch.live = True
        self._wake.set()

    def _wanted(self) -> bool:
        return bool(self.joiners) or any(w.tailed for w in self.watches.values())

    async def run(self) -> None:
        """Poll while a client joins or a watched run can log; sleep on an event otherwise."""
        failing = False
        while True:
            if not self._wanted():
                self.cursor = None  # nothing tailed: the next join starts from the top
                await self._wake.wait()
            self._wake = anyio.Event()
            full = False
            try:
                full = await self.poll()
                failing = False
            except (sqlite3.Error, StoreError) as exc:  # locked or damaged: try again later
                if not failing:
                    log.warning("api stream: cannot read new log lines: %s", exc)
                failing = True
            # a full read means more is waiting: read on once the clients' writers had
            # their turn (one write per client per coalesce interval), else at the interval
            wait = self.limits.coalesce if full else self.limits.log_interval
            with anyio.move_on_after(wait):
                await self._wake.wait()

    async def poll(self) -> bool:
        """One round: catch the joiners up, then hand out the tailed runs' new lines; True
        when the read was full (more lines are waiting)."""
        joiners, self.joiners = self.joiners, set()
        for client in joiners:  # each run's state before the cursor: no line falls between
            await self._learn_state(client)
        if self.cursor is None:
            self.cursor = await self.reader(live.last_log_id)
        for client in joiners:
            await self._catch_up(client, self.cursor)
        ending = [run for run, watch in self.watches.items() if watch.ending]
        if ending:  # a run's last lines are committed before its end is read
            with anyio.move_on_after(FLUSH_WITHIN):  # a failing store: read what there is
                await self.flush()
        # the joiners' runs once more even if ended: lines committed since the cursor
        runs = {run for run, watch in self.watches.items() if watch.tailed}
        runs.update(client.run for client in joiners if client.run is not None)
        if not runs:
            return False
        batch = self.limits.batch
        lines, top = await self.reader(live.lines_after, self.cursor, sorted(runs), batch)
        for line in lines:
            self._hand_out(line)
        full = len(lines) == batch
        self.cursor = lines[-1].id if full else top
        for run in [] if full else ending:  # read to the end: their last lines are out
            watch = self.watches.get(run)
            if watch is not None:
                watch.ending = watch.live = False
        return full

    def _hand_out(self, line: live.LogLine) -> None:
        watch = self.watches.get(line.run_id)
        if watch is None:
            return
        data = sse.encode("log", line.as_dict(), line.id)
        for client in watch.clients:
            # a client that joined during this round catches up first, in the next one
            if client in self.joiners or client.log_after is None or line.id <= client.log_after:
                continue
            client.offer(data)
            client.log_after = line.id

    async def _learn_state(self, client: Client) -> None:
        assert client.run is not None
        watch = self.watches.get(client.run)
        if watch is not None and watch.live is None:
            found = await self.reader(live.run_state, client.run)
            watch.live = found is not None and not RunState(found[1]).terminal

    async def _catch_up(self, client: Client, cursor: int) -> None:
        assert client.run is not None
        if client.run not in self.watches:  # it left meanwhile
            return
        after = client.log_after
        if after is not None and after < cursor:
            limit = max(1, self.limits.queue // 2)
            lines = await self.reader(live.run_lines_between, client.run, after, cursor, limit + 1)
            if len(lines) > limit:  # more than its buffer should take: it reloads instead
                client.drop()
                return
            for line in lines:
                client.offer(sse.encode("log", line.as_dict(), line.id))
        client.log_after = cursor if after is None else max(after, cursor)
