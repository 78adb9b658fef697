"""Slots: the global limit, per-flow limits, named pools and per-task limits, shared by runs.

Ready work waits in *lanes*: a run's ready units that need the same chain of slots, first in,
first out. A lane that cannot start its head unit is parked in the queue of the first full slot
of its chain, and only a slot given back wakes the lanes parked on it. So starting a unit and
giving a slot back cost amortised O(1) however many units are ready (trying every ready task
on every released slot was O(n²): 10,000 ready tasks under a limit of 32 cost 1.7 ms each).

When a woken lane finds a slot *earlier* in its chain full (say the global limit, while it was
parked on a pool), it keeps its place and the slot it was parked on waits, as a whole, in the
queue of that earlier slot. Every lane behind it would meet the same full slot, so none is
tried until that slot frees: no lane is moved back and forth between two full slots.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

import anyio

U = TypeVar("U")

# the order of the slots in every chain: a full slot of a lower rank is met first
GLOBAL, FLOW, POOL, TASK = range(4)


class Slots:
    """A counter of slots in use out of ``total``, and the queue of what waits for one."""

    __slots__ = ("name", "parked_on", "queue", "rank", "total", "used")

    def __init__(self, name: str, total: int, rank: int) -> None:
        self.name = name
        self.total = total
        self.used = 0
        self.rank = rank
        # lanes parked on this slot, and slots whose head waits for this one (FIFO)
        self.queue: dict[Lane[Any] | Slots, None] = {}
        self.parked_on: Slots | None = None  # while this slot's queue waits for another

    def __repr__(self) -> str:
        return f"<Slots {self.name} {self.used}/{self.total}>"

    def waiting(self) -> int:
        """Ready units queued on this slot (read-only, for /metrics): those of the lanes
        parked on it and of the lanes in the queues that wait behind it as a whole. A unit
        in a pool's queue that waits behind the global limit counts for both."""
        count, todo = 0, [self]
        while todo:
            for entry in todo.pop().queue:
                if isinstance(entry, Slots):
                    todo.append(entry)
                else:
                    count += len(entry.units)
        return count


Chain = tuple[Slots, ...]


class Lane(Generic[U]):
    """One run's ready units that need the same chain, first in, first out.

    :param start: starts a unit whose slots were taken; returns ``False`` when it can no
        longer start anything (the run's task group is shutting down)
    :param blocked: told once per unit that waits, with the slot that is full (``show``
        gives it as the wait reason)
    """

    __slots__ = ("blocked", "chain", "closed", "parked_on", "start", "units")

    def __init__(
        self,
        chain: Chain,
        start: Callable[[U], bool],
        blocked: Callable[[U, Slots], None],
    ) -> None:
        self.chain = chain
        self.start = start
        self.blocked = blocked
        self.units: deque[U] = deque()
        self.parked_on: Slots | None = None
        self.closed = False

    def __repr__(self) -> str:
        return f"<Lane {len(self.units)} ready, parked on {self.parked_on}>"


class Limits:
    """Every limit in the process. No coroutine ever waits for a slot: a unit is started the
    moment its whole chain (global, flow, pool, task — always that order) has room, by
    :meth:`offer` or by the :meth:`give` that made the room. First come, first served per
    slot."""

    def __init__(self, global_limit: int, pools: Mapping[str, int]) -> None:
        self.global_slots = Slots("global limit", global_limit, GLOBAL)
        self.pools = {name: Slots(f"pool {name}", size, POOL) for name, size in pools.items()}
        self._flows: dict[str, Slots] = {}
        self._tasks: dict[tuple[str, str], Slots] = {}
        self._runs: dict[str, Slots] = {}
        self._run_waiters: dict[str, deque[anyio.Event]] = {}

    def flow_slots(self, flow: str, size: int | None) -> Slots | None:
        if size is None:
            return None
        slots = self._flows.get(flow)
        if slots is None:
            slots = self._flows[flow] = Slots(f"flow {flow}", size, FLOW)
        if size > slots.total:  # a reloaded flow may change its limit
            slots.total = size
            self._drain(slots)
        slots.total = size
        return slots

    def task_slots(self, flow: str, task: str, size: int) -> Slots:
        """A task's own limit (``max_concurrency=`` on a mapped task), over all its runs."""
        slots = self._tasks.get((flow, task))
        if slots is None:
            slots = self._tasks[(flow, task)] = Slots(f"task {flow}.{task}", size, TASK)
        if size > slots.total:
            slots.total = size
            self._drain(slots)
        slots.total = size
        return slots

    def take(self, chain: Chain) -> Slots | None:
        """Take one slot of each in *chain*; return ``None``, or the first full one."""
        for slots in chain:
            if slots.used >= slots.total:
                return slots
        for slots in chain:
            slots.used += 1
        return None

    def give(self, chain: Chain) -> None:
        """Give back what :meth:`take` took, and start what waited for those slots."""
        for slots in chain:
            slots.used -= 1
        for slots in chain:
            if slots.queue:
                self._drain(slots)

    # --- lanes ---

    def offer(self, lane: Lane[U], unit: U) -> None:
        """*unit* is ready: start it now if its chain has room, else queue it in *lane*."""
        lane.units.append(unit)
        if lane.parked_on is not None:  # the lane waits already: the unit waits behind it
            lane.blocked(unit, lane.parked_on)
            return
        if len(lane.units) == 1:
            self._run(lane)

    def close(self, lane: Lane[U]) -> None:
        """The lane's run ended: drop it from whatever queue it waits in."""
        lane.closed = True
        lane.units.clear()
        self._unpark(lane)

    def _run(self, lane: Lane[U]) -> None:
        """Start the lane's units while its chain has room; park it on the first full slot."""
        units = lane.units
        while units and not lane.closed:
            full = self.take(lane.chain)
            if full is not None:
                self._park(lane, full)
                lane.blocked(units[0], full)
                return
            if not self._start(lane):
                return

    def _start(self, lane: Lane[U]) -> bool:
        unit = lane.units.popleft()
        if lane.start(unit):
            return True
        # the run is being torn down: undo the take and let the run's cancel path record
        # the unit; the lane starts nothing more
        for slots in lane.chain:
            slots.used -= 1
        lane.units.appendleft(unit)
        lane.closed = True
        self._unpark(lane)
        return False

    def _park(self, lane: Lane[U], full: Slots) -> None:
        if lane.parked_on is full:
            return
        self._unpark(lane)
        lane.parked_on = full
        full.queue[lane] = None

    def _unpark(self, lane: Lane[U]) -> None:
        if lane.parked_on is not None:
            lane.parked_on.queue.pop(lane, None)
            lane.parked_on = None

    def _drain(self, slots: Slots) -> None:
        """*slots* has room: start what waits in its queue, first come, first served.

        Each step starts a unit, drops an emptied lane, moves a lane to a full slot *later*
        in its chain (at most three times per unit offered), or stops the drain: so the work
        per released slot is bounded by what it starts, not by how much waits.
        """
        queue = slots.queue
        while queue and slots.used < slots.total:
            entry = next(iter(queue))
            if isinstance(entry, Slots):  # a slot whose queue waited for this one
                del queue[entry]
                entry.parked_on = None
                self._drain(entry)
                continue
            lane = entry
            units = lane.units
            full: Slots | None = None
            while units and not lane.closed:
                full = self.take(lane.chain)
                if full is not None:
                    break
                if not self._start(lane):
                    break
            if not units or lane.closed:
                self._unpark(lane)
                continue
            assert full is not None
            if full is slots:  # full again
                return
            if full.rank < slots.rank:
                # blocked before this slot: everything queued here would be too, so this
                # queue waits as a whole until *full* frees (the lane keeps its place)
                if slots.parked_on is None:
                    slots.parked_on = full
                    full.queue[slots] = None
                lane.blocked(units[0], full)
                return
            # blocked after this slot: the lane waits there; the next in line may fit
            self._park(lane, full)
            lane.blocked(units[0], full)

    # --- max_active_runs ---

    def try_admit_run(self, flow: str, limit: int | None) -> bool:
        """Take a run slot of *flow* if one is free (always free without a limit)."""
        if limit is None:
            return True
        slots = self._runs.setdefault(flow, Slots(f"runs of {flow}", limit, FLOW))
        slots.total = limit
        if slots.used >= slots.total:
            return False
        slots.used += 1
        return True

    def force_admit_run(self, flow: str, limit: int | None) -> None:
        """Count a run of *flow* as active even over its limit (a run resumed after a
        restart was admitted before it)."""
        if limit is not None:
            slots = self._runs.setdefault(flow, Slots(f"runs of {flow}", limit, FLOW))
            slots.used += 1

    async def admit_run(self, flow: str, limit: int | None) -> None:
        """Wait until a run of *flow* may start under its ``max_active_runs``: first come,
        first served; a finished run hands its slot to the first waiting one (waking every
        waiting run at each release cost O(n²) for n runs queued in one process)."""
        if self.try_admit_run(flow, limit):
            return
        waiter = anyio.Event()
        queue = self._run_waiters.setdefault(flow, deque())
        queue.append(waiter)
        try:
            await waiter.wait()
        except BaseException:
            if waiter.is_set():  # handed a slot, but cancelled before it resumed
                self.release_run(flow, limit)
            else:
                queue.remove(waiter)
            raise

    def release_run(self, flow: str, limit: int | None) -> None:
        if limit is None:
            return
        slots = self._runs[flow]
        slots.used -= 1
        queue = self._run_waiters.get(flow)
        while queue and slots.used < slots.total:
            slots.used += 1  # the slot goes to the first waiting run
            queue.popleft().set()
