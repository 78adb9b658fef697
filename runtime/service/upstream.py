"""Upstream-flow triggers in the service: ended upstream runs (and tasks) become queued
downstream runs, exactly once across restarts, reloads and other processes' runs.

The store is the truth, events are a hint. A pass reads, per ``on_flow`` trigger of the loaded
flows, the upstream runs above the trigger's cursor that ended in a matching state and have no
downstream run, and commits those runs with the moved cursor in one transaction
(:mod:`runtime.store.upstream`). Passes run at start (what ended while the service was down,
or was killed between an upstream's end and its downstream's creation), at once when the
runner's bus says a watched upstream run or task ended here (the read commits what the engine
queued first, so the end is read back as stored), after each reload, and every few seconds
for runs executed by other processes (``sluiceway run`` beside the service).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio
from anyio.abc import TaskStatus

from runtime.define.flow import Flow
from runtime.engine.events import Event, RunEnded, TaskEnded
from runtime.errors import SluicewayError
from runtime.service.context import ServiceContext
from runtime.store import upstream
from runtime.store.upstream import Watch

log = logging.getLogger("sluiceway.runtime.upstream")

UPSTREAM_POLL = 2.0
"""Seconds between passes over every trigger: how soon a run another process executed starts
its downstream runs."""


def watches(flows: Mapping[str, Flow]) -> list[tuple[Flow, Watch]]:
    """The ``on_flow`` triggers of *flows*, each once (two equal triggers share a cursor)."""
    found: dict[tuple[str, str], tuple[Flow, Watch]] = {}
    for flow in flows.values():
        for spec in flow.upstreams:
            if spec.problems:
                continue  # a loaded flow has none; a Flow made by hand may
            key = str(spec)
            found.setdefault(
                (flow.name, key), (flow, Watch(flow.name, key, spec.flow, spec.states, spec.task))
            )
    return list(found.values())


class Upstreams:
    """Turns ended upstream runs into queued downstream runs (see the module's docstring).

    A downstream flow that is not loaded gets nothing while it is away; its cursor stays, and
    once it loads again the next pass queues a run for every matching upstream run that ended
    meanwhile. A paused downstream flow gets its runs queued (they wait like other queued runs).
    """

    def __init__(self, ctx: ServiceContext, *, poll: float = UPSTREAM_POLL) -> None:
        self.ctx = ctx
        self.poll = poll
        self.passes = 0  # passes made (tests wait on it)
        self._wake = anyio.Event()
        self._dirty: set[str] = set()  # upstream flows with ended runs or tasks to look at
        self._everything = True  # the next pass looks at every trigger
        self._heeded: dict[str, set[str | None]] = {}  # upstream: tasks watched, None: the run

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Queue what ended while the service was down, report started, then go on until
        cancelled."""
        unsubscribe = self.ctx.runner.bus.subscribe(self._heard)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(self._follow_reloads, name="on_flow reloads")
                await self._pass()
                task_status.started()
                while True:
                    with anyio.move_on_after(self.poll) as timer:
                        await self._wake.wait()
                    if timer.cancelled_caught:
                        self._everything = True  # the periodic pass: other processes' runs
                    await self._pass()
        finally:
            unsubscribe()

    def look_again(self) -> None:
        """Make a pass over every trigger now (it runs in the service's task, not here)."""
        self._everything = True
        self._wake.set()

    def _heard(self, event: Event) -> None:
        """A bus subscriber: note that a watched upstream ended something. Never blocks."""
        if isinstance(event, RunEnded):
            heeded = None in self._heeded.get(event.flow, ())
        elif isinstance(event, TaskEnded):
            # a mapped task fires once, as itself (index None), not per instance
            heeded = event.index is None and event.name in self._heeded.get(event.flow, ())
        else:
            return
        if heeded:
            self._dirty.add(event.flow)
            self._wake.set()

    async def _follow_reloads(self) -> None:
        while True:
            changed = self.ctx.flows_changed
            await changed.wait()
            self.look_again()  # a trigger added: its cursor starts now

    async def _pass(self) -> None:
        """One pass over the triggers that may have something to do; errors are logged and
        the next pass tries again (nothing is lost: the cursor has not moved)."""
        self._wake = anyio.Event()
        dirty, everything = self._dirty, self._everything
        self._dirty, self._everything = set(), False
        found = watches(self.ctx.flows)
        heeded: dict[str, set[str | None]] = {}
        for _, watch in found:
            heeded.setdefault(watch.upstream, set()).add(watch.task)
        self._heeded = heeded
        if not everything:
            found = [(flow, watch) for flow, watch in found if watch.upstream in dirty]
        try:
            while found:
                found = await self._fire(found)
        except SluicewayError as exc:  # a busy or failing disk: report, keep serving
            log.error("on_flow triggers: %s; trying again", exc)
            self._everything = True
        except Exception:  # a bug here must not stop the service's other feeders
            log.exception("on_flow triggers: a pass failed; trying again")
            self._everything = True
        self.passes += 1

    async def _fire(self, found: list[tuple[Flow, Watch]]) -> list[tuple[Flow, Watch]]:
        """Queue the downstream runs of *found*; the triggers that have more to do."""
        store = self.ctx.store
        by_key = {(w.flow, w.trigger): flow for flow, w in found}
        pending = await store.read(upstream.pending, [w for _, w in found])
        pairs = [(by_key[(p.watch.flow, p.watch.trigger)], p) for p in pending]
        made = await upstream.fire_upstream(store, pairs, self.ctx.clock.now())
        for run_id, watch, ended in made:
            task = f" task={watch.task}" if watch.task is not None else ""
            log.info(
                "run=%s flow=%s queued: upstream run=%s flow=%s%s ended %s",
                run_id,
                watch.flow,
                ended.run_id,
                watch.upstream,
                task,
                ended.state,
            )
        for p in pending:
            if p.cursor is None:
                log.info("flow=%s %s: watching from now on", p.watch.flow, p.watch.trigger)
        if made:
            self.ctx.wake_queue()
        return [(by_key[(p.watch.flow, p.watch.trigger)], p.watch) for p in pending if p.more]
