"""The event loop's lag, measured from inside: sleep a fixed time and see how much longer it
took. A loop busy with callbacks, or blocked by a call that should have been in a thread,
wakes the sleeper late; every run, the scheduler and the store's writer were late by as much.
"""

from __future__ import annotations

import time

import anyio

from runtime.service.metrics.recorder import LAG_BUCKETS, Histogram

INTERVAL = 0.5  # seconds between samples: about 0.01 ms of the loop's time per second


class LagProbe:
    """Samples the loop's lag every :data:`INTERVAL` seconds while :meth:`run` runs.

    :ivar histogram: every sample (seconds)
    :ivar last: the latest sample (seconds)
    """

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.histogram = Histogram(LAG_BUCKETS)
        self.last = 0.0

    def sample(self, overslept: float) -> None:
        """Record one sample: how many seconds a sleep lasted beyond what was asked."""
        lag = max(0.0, overslept)
        self.last = lag
        self.histogram.observe(lag)

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            asked = time.monotonic()
            await anyio.sleep(self.interval)
            self.sample(time.monotonic() - asked - self.interval)
