"""Slots: the global limit, per-flow limits, named pools and per-task limits, shared by runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import anyio


class Slots:
    """A counter of slots in use out of ``total``; taken without waiting (see :class:`Limits`)."""

    __slots__ = ("name", "total", "used")

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = total
        self.used = 0

    def __repr__(self) -> str:
        return f"<Slots {self.name} {self.used}/{self.total}>"


Chain = tuple[Slots, ...]


class Limits:
    """Every limit in the process. Runs never park a coroutine per waiting task: a run tries
    to take a whole chain (global, flow, pool, task — always that order) at once, and when it
    cannot, it leaves a callback that is called when any slot is given back."""

    def __init__(self, global_limit: int, pools: Mapping[str, int]) -> None:
        self.global_slots = Slots("global limit", global_limit)
        self.pools = {name: Slots(f"pool {name}", size) for name, size in pools.items()}
        self._flows: dict[str, Slots] = {}
        self._tasks: dict[tuple[str, str], Slots] = {}
        self._runs: dict[str, Slots] = {}
        self._waiters: dict[Slots, dict[int, Callable[[], None]]] = {}
        self._run_released = anyio.Event()

    def flow_slots(self, flow: str, size: int | None) -> Slots | None:
        if size is None:
            return None
        slots = self._flows.get(flow)
        if slots is None:
            slots = self._flows[flow] = Slots(f"flow {flow}", size)
        slots.total = size  # a reloaded flow may change its limit
        return slots

    def task_slots(self, flow: str, task: str, size: int) -> Slots:
        """A task's own limit (``max_concurrency=`` on a mapped task), over all its runs."""
        slots = self._tasks.get((flow, task))
        if slots is None:
            slots = self._tasks[(flow, task)] = Slots(f"task {flow}.{task}", size)
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
        """Give back what :meth:`take` took, and wake runs waiting for those slots: first
        come, first served, and only while a slot is free (waking every waiting run at
        each release made 1,000 waiting runs cost a million dispatches)."""
        for slots in chain:
            slots.used -= 1
        for slots in chain:
            queue = self._waiters.get(slots)
            for _ in range(len(queue) if queue else 0):
                if not queue or slots.used >= slots.total:
                    break
                key = next(iter(queue))
                # a woken run takes a slot, or waits on whatever else is full: either way it
                # leaves this queue, so the loop ends
                queue.pop(key)()

    def wait_for_slot(self, key: int, wake: Callable[[], None], full: Slots) -> None:
        """Call *wake* when a slot of *full* is given back (one entry per *key*)."""
        self._waiters.setdefault(full, {})[key] = wake

    def forget(self, key: int) -> None:
        """Drop every wake-up left by *key* (its run ended)."""
        for queue in self._waiters.values():
            queue.pop(key, None)

    # --- max_active_runs ---

    def try_admit_run(self, flow: str, limit: int | None) -> bool:
        """Take a run slot of *flow* if one is free (always free without a limit)."""
        if limit is None:
            return True
        slots = self._runs.setdefault(flow, Slots(f"runs of {flow}", limit))
        slots.total = limit
        if slots.used >= slots.total:
            return False
        slots.used += 1
        return True

    def force_admit_run(self, flow: str, limit: int | None) -> None:
        """Count a run of *flow* as active even over its limit (a run resumed after a
        restart was admitted before it)."""
        if limit is not None:
            slots = self._runs.setdefault(flow, Slots(f"runs of {flow}", limit))
            slots.used += 1

    async def admit_run(self, flow: str, limit: int | None) -> None:
        """Wait until a run of *flow* may start under its ``max_active_runs``."""
        while not self.try_admit_run(flow, limit):
            await self._run_released.wait()

    def release_run(self, flow: str, limit: int | None) -> None:
        if limit is None:
            return
        self._runs[flow].used -= 1
        self._run_released.set()
        self._run_released = anyio.Event()
