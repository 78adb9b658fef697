"""Counting the work of dispatching: ``Limits.take`` calls, whatever the implementation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from runtime.engine.limits import Chain, Limits, Slots


@contextmanager
def counted_takes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts ``Limits.take`` calls (the work of dispatching) while the block runs."""
    calls = [0]
    real = Limits.take

    def take(self: Limits, chain: Chain) -> Slots | None:
        calls[0] += 1
        return real(self, chain)

    monkeypatch.setattr(Limits, "take", take)
    yield calls
