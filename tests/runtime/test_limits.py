"""Slot chains: take all or nothing, and wake waiting runs first come, first served, only
while a slot is free."""

from __future__ import annotations

from runtime.limits import Limits


def test_take_is_all_or_nothing_and_names_the_full_limit() -> None:
    limits = Limits(2, {"warehouse": 1})
    chain = (limits.global_slots, limits.pools["warehouse"])
    assert limits.take(chain) is None
    assert limits.take(chain) is limits.pools["warehouse"]
    assert limits.global_slots.used == 1  # nothing taken by the failed attempt
    limits.give(chain)
    assert (limits.global_slots.used, limits.pools["warehouse"].used) == (0, 0)


def test_a_released_slot_wakes_the_first_waiter_only() -> None:
    limits = Limits(1, {})
    chain = (limits.global_slots,)
    woken: list[str] = []

    def waiter(name: str) -> None:
        def wake() -> None:
            woken.append(name)
            if limits.take(chain) is not None:  # still full: wait again, at the back
                limits.wait_for_slot(hash(name), wake, limits.global_slots)

        limits.wait_for_slot(hash(name), wake, limits.global_slots)

    assert limits.take(chain) is None
    for name in ("a", "b", "c"):
        waiter(name)
    limits.give(chain)
    assert woken == ["a"]  # a took the slot: b and c stay asleep
    limits.give(chain)
    assert woken == ["a", "b"]
    limits.forget(hash("c"))
    limits.give(chain)
    assert woken == ["a", "b"]  # c's run ended: nobody left to wake


def test_a_waiter_blocked_elsewhere_lets_the_next_one_have_the_slot() -> None:
    limits = Limits(1, {"single": 1})
    pooled = (limits.global_slots, limits.pools["single"])
    plain = (limits.global_slots,)
    woken: list[str] = []
    assert limits.take(plain) is None  # the global slot is held
    assert limits.take((limits.pools["single"],)) is None  # and the pool by someone else

    def wake_pooled() -> None:
        woken.append("pooled")
        full = limits.take(pooled)
        assert full is limits.pools["single"]
        limits.wait_for_slot(1, wake_pooled, full)

    def wake_plain() -> None:
        woken.append("plain")
        assert limits.take(plain) is None

    limits.wait_for_slot(1, wake_pooled, limits.global_slots)
    limits.wait_for_slot(2, wake_plain, limits.global_slots)
    limits.give(plain)
    assert woken == ["pooled", "plain"]
    assert limits.global_slots.used == 1
