"""``Slots.waiting()``, what /metrics shows as a pool's waiters: the ready units queued on a
slot, including a pool's queue while it waits as a whole behind the global limit."""

from __future__ import annotations

from runtime.engine.limits import Chain, Lane, Limits, Slots


class Lanes:
    """Lanes of unit names; what started, with its chain, so it can give its slots back."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.running: dict[str, Chain] = {}

    def lane(self, chain: Chain) -> Lane[str]:
        def start(unit: str) -> bool:
            self.running[unit] = chain
            return True

        def blocked(unit: str, full: Slots) -> None:
            pass

        return Lane(chain, start, blocked)

    def finish(self, unit: str) -> None:
        self.limits.give(self.running.pop(unit))


def test_waiters_follow_the_queue_of_each_slot() -> None:
    limits = Limits(2, {"warehouse": 1})
    glob, warehouse = limits.global_slots, limits.pools["warehouse"]
    lanes = Lanes(limits)
    pooled, plain = lanes.lane((glob, warehouse)), lanes.lane((glob,))
    for unit in ("a1", "a2", "a3"):
        limits.offer(pooled, unit)
    limits.offer(plain, "b1")
    assert set(lanes.running) == {"a1", "b1"}
    assert (warehouse.waiting(), glob.waiting()) == (2, 0)
    limits.offer(plain, "b2")  # the global limit is full
    assert (warehouse.waiting(), glob.waiting()) == (2, 1)
    lanes.finish("a1")  # b2 takes the global slot; the warehouse's queue waits behind it
    assert set(lanes.running) == {"b1", "b2"}
    assert warehouse.parked_on is glob
    assert (warehouse.waiting(), glob.waiting()) == (2, 2)
    lanes.finish("b1")
    assert set(lanes.running) == {"b2", "a2"}
    # a3 needs the warehouse and the global limit, both full: it counts for both
    assert warehouse.parked_on is glob
    assert (warehouse.waiting(), glob.waiting()) == (1, 1)
    lanes.finish("a2")
    lanes.finish("b2")
    lanes.finish("a3")
    assert (warehouse.waiting(), glob.waiting(), warehouse.used, glob.used) == (0, 0, 0, 0)


def test_a_closed_lane_waits_no_more() -> None:
    limits = Limits(1, {})
    lanes = Lanes(limits)
    first, second = lanes.lane((limits.global_slots,)), lanes.lane((limits.global_slots,))
    limits.offer(first, "a")
    limits.offer(second, "b")
    limits.offer(second, "c")
    assert limits.global_slots.waiting() == 2
    limits.close(second)  # its run ended (cancelled)
    assert limits.global_slots.waiting() == 0
