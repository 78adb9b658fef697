"""RetryPolicy on its own: the delay before each next attempt (backoff, cap, full jitter from a
seeded Random) and which failures are tried again."""

from __future__ import annotations

import dataclasses
import random

import pytest

from runtime.define.retry import RetryPolicy
from runtime.errors import Retry


def test_the_defaults_retry_nothing_and_double_from_one_second() -> None:
    policy = RetryPolicy()
    assert not policy.should_retry(ConnectionError("refused"), 1)
    assert [policy.delay_for(n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_the_delay_grows_by_backoff_from_the_first_retry() -> None:
    policy = RetryPolicy(retries=5, delay=2, backoff=3, max_delay=1000)
    assert [policy.delay_for(n) for n in range(1, 6)] == [2, 6, 18, 54, 162]


def test_the_delay_stops_growing_at_max_delay() -> None:
    policy = RetryPolicy(retries=10, delay=1, backoff=2, max_delay=10)
    assert [policy.delay_for(n) for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]


@pytest.mark.parametrize(("delay", "backoff"), [(5, 1), (0, 2), (0, 1)])
def test_a_backoff_of_one_or_a_delay_of_zero_is_constant(delay: float, backoff: float) -> None:
    policy = RetryPolicy(retries=5, delay=delay, backoff=backoff)
    assert {policy.delay_for(n) for n in range(1, 6)} == {delay}


def test_a_cap_below_the_first_delay_caps_it_too() -> None:
    assert RetryPolicy(delay=30, max_delay=5).delay_for(1) == 5


def test_full_jitter_draws_from_zero_to_the_capped_delay() -> None:
    policy = RetryPolicy(retries=10, delay=1, backoff=2, max_delay=10, jitter=True)
    rng = random.Random(20260101)
    for attempt in range(1, 9):
        base = min(10, 2 ** (attempt - 1))
        draws = [policy.delay_for(attempt, rng) for _ in range(500)]
        assert all(0 <= d <= base for d in draws), attempt
        # spread over the whole range, not bunched near the base: it spreads retries out
        assert min(draws) < 0.05 * base, attempt
        assert max(draws) > 0.95 * base, attempt
        assert 0.4 * base < sum(draws) / len(draws) < 0.6 * base, attempt


def test_jitter_from_the_same_seed_gives_the_same_delays() -> None:
    policy = RetryPolicy(retries=5, delay=4, jitter=True)

    def delays(seed: int) -> list[float]:
        rng = random.Random(seed)
        return [policy.delay_for(n, rng) for n in range(1, 6)]

    assert delays(7) == delays(7)
    assert delays(7) != delays(8)


def test_jitter_without_a_random_uses_the_module_one() -> None:
    policy = RetryPolicy(retries=5, delay=4, jitter=True)
    state = random.getstate()
    try:
        random.seed(3)
        first = [policy.delay_for(n) for n in range(1, 6)]
        random.seed(3)
        assert [policy.delay_for(n) for n in range(1, 6)] == first
    finally:
        random.setstate(state)
    assert len(set(first)) == 5  # drawn, not the bases 4, 8, 16...
    assert first != [4, 8, 16, 32, 64]


def test_without_jitter_the_random_is_not_used() -> None:
    rng = random.Random(1)
    before = rng.getstate()
    assert RetryPolicy(delay=3).delay_for(2, rng) == 6
    assert rng.getstate() == before


def test_retries_counts_the_attempts_after_the_first() -> None:
    policy = RetryPolicy(retries=2)
    error = ConnectionError("refused")
    assert [policy.should_retry(error, n) for n in (1, 2, 3, 4)] == [True, True, False, False]


def test_retry_on_picks_the_errors_and_their_subclasses() -> None:
    policy = RetryPolicy(retries=3, retry_on=(ConnectionError, TimeoutError))
    assert policy.should_retry(ConnectionError("refused"), 1)
    assert policy.should_retry(ConnectionResetError("reset"), 1)  # a subclass
    assert policy.should_retry(TimeoutError(), 1)
    assert not policy.should_retry(ValueError("bad row"), 1)
    assert not policy.should_retry(OSError("disk"), 1)  # a base class is not enough


def test_by_default_every_exception_is_retried_but_not_a_base_exception() -> None:
    policy = RetryPolicy(retries=1)
    assert policy.should_retry(ValueError("bad row"), 1)
    assert not policy.should_retry(KeyboardInterrupt(), 1)
    assert not policy.should_retry(SystemExit(0), 1)


def test_a_raised_retry_is_retried_whatever_retry_on_says_while_attempts_remain() -> None:
    policy = RetryPolicy(retries=1, retry_on=(ConnectionError,))
    assert policy.should_retry(Retry("not yet"), 1)
    assert not policy.should_retry(Retry("not yet"), 2)
    assert not RetryPolicy().should_retry(Retry("not yet"), 1)  # retries=0: none remain


def test_a_policy_is_a_frozen_value() -> None:
    policy = RetryPolicy(retries=2, delay=5)
    assert policy == RetryPolicy(retries=2, delay=5)
    assert hash(policy) == hash(RetryPolicy(retries=2, delay=5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.retries = 3  # type: ignore[misc]  # assigning is what must fail
