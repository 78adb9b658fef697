"""Retry policy: how many attempts, which errors, and exponential backoff with a cap and jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from runtime.errors import Retry


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how soon a failed attempt is tried again.

    The delay before attempt ``n + 1`` is ``min(max_delay, delay * backoff ** (n - 1))``; with
    ``jitter`` it is drawn uniformly from ``[0, that]`` ("full jitter"), which spreads retries of
    many tasks that failed together.
    """

    retries: int = 0
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: bool = False
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """True when *attempt* (1-based) failed with *error* and another attempt is allowed."""
        if attempt > self.retries:
            return False
        return isinstance(error, (Retry, *self.retry_on))

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed *attempt* (1-based) before the next one."""
        try:
            base = min(self.max_delay, self.delay * self.backoff ** (attempt - 1))
        except OverflowError:  # backoff ** attempt past a float, after many attempts
            base = self.max_delay
        if self.jitter:
            return (rng or random).uniform(0.0, base)
        return base
