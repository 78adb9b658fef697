"""The SLA monitor: one timer that records runs and tasks still going past their deadline.

Deadlines
---------
* A flow's ``sla=`` runs from the run's logical date: a run must end within ``sla`` of the
  instant it is for. Runs made by ``backfill`` and retries of ended runs are exempt: their
  logical date is in the past by design, so every one of them would be a miss.
* A task's ``sla=`` runs from the task's first start in the run, over all its attempts (for a
  mapped task, from its first instance's start until the task as a whole ends).

A miss is recorded once, as an ``sla.missed`` event row of the run (``task`` set for a task's
SLA), with the payload ``{"sla": seconds, "deadline": iso, "scope": "flow" | "task"}``;
``scope``, not ``kind``, because ``show --json`` spreads the payload next to the row's own
``kind``. The store's unique index keeps it once however often it is detected (two monitors, a
restart); only the detection that recorded it logs a WARNING and publishes :class:`SlaMissed`.

The monitor is a timer, not a poller: it sleeps on the clock until the earliest deadline, and a
changed set of deadlines cuts the sleep short.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from anyio.abc import TaskStatus

from runtime import codec
from runtime.clock import Clock
from runtime.define.flow import Flow
from runtime.engine.events import Event, EventBus, RunEnded, RunStarted, TaskEnded, TaskStarted
from runtime.errors import StoreError
from runtime.store import Store
from runtime.store.requests import record_sla_miss, run_brief

__all__ = ["EXEMPT_TRIGGERS", "SlaMissed", "run_sla_monitor"]

log = logging.getLogger("sluiceway.runtime.sla")

# trigger kinds whose runs are not held to the flow's SLA (see the module docstring)
EXEMPT_TRIGGERS = frozenset({"backfill", "retry"})


@dataclass(frozen=True, slots=True)
class SlaMissed(Event):
    """A run (``task`` None) or task was still going at its SLA deadline; published once,
    when the miss was recorded."""

    task: str | None
    scope: str  # "flow" or "task"
    sla: float
    deadline: datetime


@dataclass(frozen=True, slots=True)
class _Deadline:
    at: datetime
    run_id: int
    flow: str
    task: str | None
    sla: float

    @property
    def key(self) -> tuple[int, str | None]:
        return (self.run_id, self.task)


class _Monitor:
    """The SLA monitor of one process: it owns the armed deadlines (one per run or task with
    an SLA that is still going), the misses it has already checked, and the one timer that
    sleeps until the earliest deadline. Its inputs are the events :func:`run_sla_monitor`
    passes on; it writes nothing but ``sla.missed`` rows, and publishes :class:`SlaMissed`.
    """

    def __init__(
        self, bus: EventBus, store: Store, clock: Clock, flows: Callable[[str], Flow | None]
    ) -> None:
        self.bus = bus
        self.store = store
        self.clock = clock
        self.flows = flows
        self.deadlines: dict[tuple[int, str | None], _Deadline] = {}
        self.missed: set[tuple[int, str | None]] = set()  # checked, not re-armed, this process
        self.nap: anyio.CancelScope | None = None

    # --- the timer ---

    async def run_timer(self) -> None:
        while True:
            due = min(self.deadlines.values(), key=lambda d: d.at, default=None)
            if due is None:
                await self._nap(None)
                continue
            delay = (due.at - self.clock.now()).total_seconds()
            if delay > 0:
                await self._nap(delay)
                continue
            del self.deadlines[due.key]
            self.missed.add(due.key)
            try:
                await self._record(due)
            except Exception:  # one miss that cannot be recorded never stops the monitor
                log.exception("run=%s flow=%s task=%s sla.missed not recorded", *_ids(due))

    async def _nap(self, seconds: float | None) -> None:
        """Sleep on the clock (until woken, when *seconds* is None); :meth:`_wake` ends it."""
        with anyio.CancelScope() as scope:
            self.nap = scope
            if seconds is None:
                await anyio.sleep_forever()
            else:
                await self.clock.sleep(seconds)
        self.nap = None

    def _wake(self) -> None:
        if self.nap is not None:
            self.nap.cancel()

    async def _record(self, due: _Deadline) -> None:
        now = self.clock.now()
        scope = "flow" if due.task is None else "task"
        payload = {"sla": due.sla, "deadline": codec.iso(due.at), "scope": scope}
        try:
            recorded = await record_sla_miss(self.store, due.run_id, due.task, now, payload)
        except StoreError as exc:
            log.error("run=%s flow=%s task=%s sla.missed not recorded: %s", *_ids(due), exc)
            return
        if not recorded:
            log.debug("run=%s flow=%s task=%s sla.missed was recorded before", *_ids(due))
            return
        log.warning(
            "run=%s flow=%s task=%s missed its %s SLA of %gs: still going at %s",
            *_ids(due),
            scope,
            due.sla,
            codec.iso(due.at),
        )
        self.bus.publish(SlaMissed(now, due.run_id, due.flow, due.task, scope, due.sla, due.at))

    # --- the events ---

    async def handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            await self._run_started(event)
        elif isinstance(event, TaskStarted):
            self._task_started(event)
        elif isinstance(event, TaskEnded):
            if event.index is None:  # not a mapped instance: its task goes on
                self._drop((event.run_id, event.name))
        elif isinstance(event, RunEnded):
            for key in [k for k in self.deadlines if k[0] == event.run_id]:
                self._drop(key)
            self.missed = {k for k in self.missed if k[0] != event.run_id}

    async def _run_started(self, event: RunStarted) -> None:
        flow = self.flows(event.flow)
        if flow is None or flow.sla is None or (event.run_id, None) in self.missed:
            return
        # RunStarted carries no logical date: the run's row has it (committed at creation)
        brief = await self.store.read(run_brief, event.run_id)
        if brief is None or brief["logical_date"] is None:
            return
        if brief["trigger_kind"] in EXEMPT_TRIGGERS:
            log.debug("run=%s flow=%s exempt from the flow SLA", event.run_id, event.flow)
            return
        at = _after(brief["logical_date"], flow.sla)
        if at is not None:
            self._arm(_Deadline(at, event.run_id, event.flow, None, flow.sla))

    def _task_started(self, event: TaskStarted) -> None:
        name = event.name
        key = (event.run_id, name)
        if key in self.deadlines or key in self.missed:
            return  # the deadline counts from the first start, over all attempts
        flow = self.flows(event.flow)
        task = flow.tasks.get(name) if flow is not None else None
        if task is None or task.sla is None:
            return
        at = _after(event.ts, task.sla)
        if at is not None:
            self._arm(_Deadline(at, event.run_id, event.flow, name, task.sla))

    def _arm(self, deadline: _Deadline) -> None:
        self.deadlines[deadline.key] = deadline
        self._wake()

    def _drop(self, key: tuple[int, str | None]) -> None:
        if self.deadlines.pop(key, None) is not None:
            self._wake()


def _after(start: datetime, seconds: float) -> datetime | None:
    """The deadline *seconds* after *start*; None (never due) past what datetime can hold.
    Flows validate their SLAs (at most a year), so this only guards the timer."""
    try:
        return start + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        log.warning("an SLA of %gs after %s is past the year 9999: not watched", seconds, start)
        return None


def _ids(due: _Deadline) -> tuple[int, str, str]:
    return due.run_id, due.flow, due.task or "-"


async def run_sla_monitor(
    bus: EventBus,
    store: Store,
    clock: Clock,
    flows: Callable[[str], Flow | None],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Watch *bus* and record SLA misses into *store* until cancelled.

    Start it with ``await tg.start(run_sla_monitor, bus, store, clock, lookup)``: it reports
    started once subscribed, so no run started afterwards goes unwatched.

    :param flows: the flow of a given name as it is now (``None`` when unknown); looked up at
        each run and task start, so a reload applies to runs started after it
    """
    monitor = _Monitor(bus, store, clock, flows)
    send, receive = anyio.create_memory_object_stream[Event](math.inf)

    watched: set[int] = set()  # runs with an SLA to watch: their end matters

    def on_event(event: Event) -> None:
        # decided here, in publish order: a run with no SLA costs no wake-up of the monitor
        # per event (it doubled the cost of a 10,000-task run)
        if isinstance(event, TaskStarted):
            flow = flows(event.flow)
            task = flow.tasks.get(event.name) if flow is not None else None
            if task is None or task.sla is None:
                return
            watched.add(event.run_id)
        elif isinstance(event, TaskEnded):
            if event.run_id not in watched or event.index is not None:
                return
        elif isinstance(event, RunStarted):
            flow = flows(event.flow)
            if flow is None or flow.sla is None:
                return
            watched.add(event.run_id)
        elif isinstance(event, RunEnded):
            if event.run_id not in watched:
                return
            watched.discard(event.run_id)
        else:
            return
        send.send_nowait(event)  # never blocks: the buffer is unbounded

    with send, receive:
        unsubscribe = bus.subscribe(on_event)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(monitor.run_timer, name="sla timer")
                task_status.started()
                async for event in receive:
                    try:
                        await monitor.handle(event)
                    except Exception:  # the monitor outlives one event it could not handle
                        log.exception("run=%s flow=%s: SLA not watched", event.run_id, event.flow)
        finally:
            unsubscribe()
