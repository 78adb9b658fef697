"""After a file's run ends: carry out the trigger's ``on_success`` / ``on_failure`` on the
file and record what became of it on its claim; at start-up and every rescan, the same for
claims whose run ended while nobody listened (the service was down, or a crash came between
the run's end and the move)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from plugins.triggers.files.moving import settle_file
from plugins.triggers.files.spec import FilesSpec
from runtime import codec
from runtime.abc import Binding, TriggerHost
from runtime.engine.events import Event, RunEnded
from runtime.errors import SluicewayError
from runtime.store import claims
from runtime.store.claims import ClaimRow, FileKey, Settlement

__all__ = ["GRACE", "Settler", "move_all"]

log = logging.getLogger("sluiceway.plugins.files")

GRACE = 60.0
"""Seconds a reconcile leaves the claims of a run another process ran and just ended: that
process (``sluiceway run --file``) settles its own."""

# (flow, trigger key) -> the trigger's binding and spec, or None when it is not loaded
Lookup = Callable[[str, str], tuple[Binding, FilesSpec] | None]


def move_all(items: Sequence[tuple[ClaimRow, FilesSpec]]) -> list[Settlement]:
    """Settle every file of *items* (blocking: runs in a worker thread)."""
    out = []
    for row, spec in items:
        action = spec.on_success if row.run_state == "succeeded" else spec.on_failure
        got = settle_file(Path(row.key.path), row.key.size, row.key.mtime_ns, action)
        out.append(Settlement(row.id, got.outcome, got.moved_to, got.error))
    return out


class Settler:
    """Settles the claims of ended runs for one files source.

    Run ends arrive through the event bus (:meth:`on_event`, which must not block) and are
    handled in order by :meth:`run`, many per pass: the moves run in a worker thread, and the
    outcomes are recorded in one transaction. A move that fails is recorded and reported;
    it never stops the source.
    """

    def __init__(
        self, host: TriggerHost, lookup: Lookup, forget: Callable[[str, str, FileKey], None]
    ) -> None:
        self.host = host
        self.lookup = lookup
        self.forget = forget
        self.flows: set[str] = set()  # flows with files triggers: their run ends matter
        self._send: MemoryObjectSendStream[int] | None = None  # while run() runs
        self._lock = anyio.Lock()  # one settling pass at a time (events, reconcile)

    def on_event(self, event: Event) -> None:
        """Bus subscriber: queue the end of a run of a files-triggered flow."""
        if isinstance(event, RunEnded) and event.flow in self.flows and self._send is not None:
            self._send.send_nowait(event.run_id)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Settle ended runs as they come, until cancelled."""
        send, receive = anyio.create_memory_object_stream[int](math.inf)
        self._send = send
        task_status.started()
        try:
            async with send, receive:
                async for first in receive:
                    await self._settle_runs(_drain(first, receive))
        finally:
            self._send = None

    async def _settle_runs(self, ids: list[int]) -> None:
        try:
            rows = await self.host.store.read(claims.claims_of_runs, ids)
            await self.settle(rows)
        except SluicewayError as exc:
            self.host.report(None, f"files: cannot settle runs {ids}: {exc}")

    async def reconcile(self, *, grace: float = GRACE) -> int:
        """Settle the claims whose run ended and that nobody settled; returns how many.

        Those of a run another live process executed (``sluiceway run --file``) are left to
        it for *grace* seconds after the run's end: it settles them itself."""
        rows = await self.host.store.read(claims.unsettled_ended)
        limit = self.host.now() - timedelta(seconds=grace)
        due = [
            row
            for row, alive in rows
            if row.run_epoch == self.host.epoch
            or not alive
            or _ended_before(row.run_ended_at, limit)
        ]
        return await self.settle(due)

    async def settle(self, rows: Sequence[ClaimRow]) -> int:
        """Carry out each claim's action for its run's end and record the outcomes."""
        items = []
        for row in rows:
            found = self.lookup(row.flow, row.trigger)
            if found is not None and row.run_state in ("succeeded", "failed", "cancelled"):
                items.append((row, found))
        if not items:
            return 0
        async with self._lock:
            done = await anyio.to_thread.run_sync(
                move_all, [(row, spec) for row, (_, spec) in items]
            )
            count = await claims.settle_claims(self.host.store, done, self.host.now())
        for (row, (binding, _)), got in zip(items, done, strict=True):
            self._tell(row, binding, got)
        return count

    def _tell(self, row: ClaimRow, binding: Binding, got: Settlement) -> None:
        if got.outcome in ("moved", "deleted"):
            self.forget(row.flow, row.trigger, row.key)
            log.info(
                "flow=%s run=%s file %s %s%s", row.flow, row.run_id, row.key.path, got.outcome,
                f" to {got.moved_to}" if got.moved_to else "",
            )  # fmt: skip
        elif got.outcome == "failed":
            self.host.report(binding, f"run {row.run_id}: {row.key.path}: {got.error}")
        elif got.outcome == "kept":
            log.info(
                "flow=%s run=%s file %s not touched: %s",
                row.flow, row.run_id, row.key.path, got.error,
            )  # fmt: skip


def _drain(first: int, receive: MemoryObjectReceiveStream[int]) -> list[int]:
    ids = [first]
    while True:
        try:
            ids.append(receive.receive_nowait())
        except anyio.WouldBlock:
            return ids


def _ended_before(ended_at: str | None, limit: datetime) -> bool:
    ended = codec.parse_iso(ended_at)
    return ended is None or ended <= limit
