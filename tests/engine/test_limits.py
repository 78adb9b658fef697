"""Slot chains: take all or nothing; lanes wait on the first full slot of their chain and are
started first come, first served by the slot given back, with work bounded per started unit."""

from __future__ import annotations

import pytest

from runtime.engine.limits import Chain, Lane, Limits, Slots
from tests.engine.counting import counted_takes


def test_take_is_all_or_nothing_and_names_the_full_limit() -> None:
    limits = Limits(2, {"warehouse": 1})
    chain = (limits.global_slots, limits.pools["warehouse"])
    assert limits.take(chain) is None
    assert limits.take(chain) is limits.pools["warehouse"]
    assert limits.global_slots.used == 1  # nothing taken by the failed attempt
    limits.give(chain)
    assert (limits.global_slots.used, limits.pools["warehouse"].used) == (0, 0)


class Recorder:
    """Lanes whose units are names; started units are kept in order, as are wait reasons."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.started: list[str] = []
        self.chains: dict[str, Chain] = {}
        self.reasons: dict[str, str] = {}
        self.refuse = False

    def lane(self, chain: Chain) -> Lane[str]:
        def start(unit: str) -> bool:
            if self.refuse:
                return False
            self.started.append(unit)
            self.chains[unit] = chain
            return True

        def blocked(unit: str, full: Slots) -> None:
            self.reasons.setdefault(unit, full.name)

        return Lane(chain, start, blocked)

    def finish(self, unit: str) -> None:
        self.limits.give(self.chains.pop(unit))


def test_units_start_at_once_while_there_is_room_then_first_come_first_served() -> None:
    limits = Limits(2, {})
    rec = Recorder(limits)
    a, b = rec.lane((limits.global_slots,)), rec.lane((limits.global_slots,))
    for unit in ("a1", "a2", "a3"):
        limits.offer(a, unit)
    limits.offer(b, "b1")
    assert rec.started == ["a1", "a2"]
    assert rec.reasons == {"a3": "global limit", "b1": "global limit"}
    rec.finish("a1")
    assert rec.started == ["a1", "a2", "a3"]  # a waited first
    rec.finish("a2")
    assert rec.started[-1] == "b1"
    rec.finish("a3")
    rec.finish("b1")
    assert limits.global_slots.used == 0


def test_a_closed_lane_is_not_woken() -> None:
    limits = Limits(1, {})
    rec = Recorder(limits)
    a, b, c = (rec.lane((limits.global_slots,)) for _ in range(3))
    limits.offer(a, "a1")
    limits.offer(b, "b1")
    limits.offer(c, "c1")
    limits.close(b)  # b's run ended while it waited
    rec.finish("a1")
    assert rec.started == ["a1", "c1"]
    assert not limits.global_slots.queue


def test_a_lane_behind_a_full_pool_does_not_block_one_that_needs_a_free_pool() -> None:
    limits = Limits(4, {"a": 1, "b": 1})
    rec = Recorder(limits)
    g, pa, pb = limits.global_slots, limits.pools["a"], limits.pools["b"]
    lane_a, lane_b = rec.lane((g, pa)), rec.lane((g, pb))
    for i in range(3):
        limits.offer(lane_a, f"a{i}")
    limits.offer(lane_b, "b0")
    limits.offer(lane_b, "b1")
    assert rec.started == ["a0", "b0"]  # b started although a's pool was full
    assert rec.reasons == {"a1": "pool a", "a2": "pool a", "b1": "pool b"}
    rec.finish("b0")
    assert rec.started == ["a0", "b0", "b1"]
    rec.finish("a0")
    assert rec.started[-1] == "a1"


def test_a_woken_lane_blocked_on_a_later_slot_lets_the_next_lane_have_the_slot() -> None:
    limits = Limits(1, {"single": 1})
    rec = Recorder(limits)
    g, single = limits.global_slots, limits.pools["single"]
    holder = rec.lane((single,))
    limits.offer(holder, "holder")  # someone else holds the pool
    plain0 = rec.lane((g,))
    limits.offer(plain0, "p0")  # and the global slot
    pooled, plain = rec.lane((g, single)), rec.lane((g,))
    limits.offer(pooled, "pooled")
    limits.offer(plain, "plain")
    rec.finish("p0")
    assert rec.started == ["holder", "p0", "plain"]
    assert pooled.parked_on is single  # moved on to the slot that is really full
    rec.finish("plain")
    rec.finish("holder")
    assert rec.started[-1] == "pooled"


def test_a_queue_blocked_on_an_earlier_slot_waits_as_a_whole_and_keeps_its_order() -> None:
    limits = Limits(1, {"single": 1})
    rec = Recorder(limits)
    g, single = limits.global_slots, limits.pools["single"]
    limits.offer(rec.lane((single,)), "holder")  # the pool is held
    lanes = [rec.lane((g, single)) for _ in range(3)]
    for i, lane in enumerate(lanes):
        limits.offer(lane, f"x{i}")
    assert all(lane.parked_on is single for lane in lanes)
    limits.offer(rec.lane((g,)), "y0")  # the global slot had room: y0 takes it
    rec.finish("holder")
    # the pool has room, but x0 meets the full global slot: every lane queued on the pool
    # would, so the pool's queue waits on the global slot as a whole, in its order
    assert single.parked_on is g
    assert all(lane.parked_on is single for lane in lanes)
    assert rec.reasons["x0"] == "pool single"  # a reason is given once
    rec.finish("y0")
    assert rec.started == ["holder", "y0", "x0"]
    rec.finish("x0")
    assert rec.started[-1] == "x1"
    rec.finish("x1")
    assert rec.started[-1] == "x2"
    rec.finish("x2")
    assert (g.used, single.used, g.queue, single.queue) == (0, 0, {}, {})


def test_a_lane_that_cannot_start_gives_the_slots_back_and_stops() -> None:
    limits = Limits(1, {})
    rec = Recorder(limits)
    first, second = rec.lane((limits.global_slots,)), rec.lane((limits.global_slots,))
    limits.offer(first, "f0")
    limits.offer(second, "s0")
    rec.refuse = True  # second's run is being torn down
    rec.finish("f0")
    assert second.closed
    assert list(second.units) == ["s0"]
    assert limits.global_slots.used == 0


def test_a_raised_flow_limit_starts_what_waited() -> None:
    limits = Limits(10, {})
    rec = Recorder(limits)
    flow = limits.flow_slots("f", 1)
    assert flow is not None
    lane = rec.lane((limits.global_slots, flow))
    for i in range(3):
        limits.offer(lane, f"u{i}")
    assert rec.started == ["u0"]
    limits.flow_slots("f", 3)  # a reload raised max_concurrency
    assert rec.started == ["u0", "u1", "u2"]


@pytest.mark.parametrize("shape", ["one lane", "one lane per unit", "pools", "runs"])
@pytest.mark.slow
def test_dispatch_work_per_started_unit_is_bounded(
    shape: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 ready units under a limit of 32: take() calls per started unit stay a small
    constant (trying every ready unit on every released slot made it thousands)."""
    limits = Limits(32, {"a": 4, "b": 4})
    rec = Recorder(limits)
    g = limits.global_slots
    n = 10_000
    with counted_takes(monkeypatch) as takes:
        if shape == "one lane":
            lane = rec.lane((g,))
            for i in range(n):
                limits.offer(lane, f"u{i}")
        elif shape == "one lane per unit":  # e.g. 10,000 runs waiting in the service
            for i in range(n):
                limits.offer(rec.lane((g,)), f"u{i}")
        elif shape == "pools":
            lanes = [rec.lane((g, limits.pools["a"])), rec.lane((g, limits.pools["b"]))]
            lanes.append(rec.lane((g,)))
            for i in range(n):
                limits.offer(lanes[i % 3], f"u{i}")
        else:  # many runs, each with a pooled and a plain lane
            for run in range(n // 10):
                pooled, plain = rec.lane((g, limits.pools["a"])), rec.lane((g,))
                for i in range(5):
                    limits.offer(pooled, f"r{run}p{i}")
                    limits.offer(plain, f"r{run}q{i}")
        done = 0
        while rec.chains:
            rec.finish(next(iter(rec.chains)))
            done += 1
    assert len(rec.started) == n
    assert takes[0] / n < 4, f"{takes[0]} take() calls for {n} units ({shape})"
    assert g.used == 0


def test_ping_pong_between_two_full_slots_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 lanes wait for a pool while a steady stream of plain work keeps the global limit
    full. Each time the pool frees, its head meets the full global slot: the pool's queue waits
    on the global slot as a whole. Moving every lane back and forth between the two queues
    instead cost about 120 take() calls per unit here, growing with the queue."""
    limits = Limits(8, {"a": 1})
    rec = Recorder(limits)
    g, pool = limits.global_slots, limits.pools["a"]
    n = 2_000
    offered = 0

    def more_plain() -> None:
        nonlocal offered
        limits.offer(rec.lane((g,)), f"p{offered}")
        offered += 1

    with counted_takes(monkeypatch) as takes:
        for i in range(n):
            limits.offer(rec.lane((g, pool)), f"x{i}")
        for _ in range(16):
            more_plain()
        while rec.chains:
            unit = next(iter(rec.chains))  # the oldest running unit ends first
            rec.finish(unit)
            if unit.startswith("p") and offered < n:
                more_plain()
    assert len(rec.started) == 2 * n
    assert takes[0] / (2 * n) < 4, f"{takes[0]} take() calls for {2 * n} units"
    assert (g.used, pool.used) == (0, 0)
