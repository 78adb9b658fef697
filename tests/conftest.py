"""Shared fixtures: a SQLite file in tmp_path, a fake clock, and a runner factory on both.

pytest-asyncio runs an async fixture's setup and teardown in different tasks, so a fixture
cannot hold the store's task group open across ``yield``: tests open the runner themselves,
``async with make_runner() as runner:``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from runtime.engine.events import Event, EventBus
from runtime.engine.runner import Runner
from runtime.testing import FakeClock, open_test_runner

MakeRunner = Callable[..., AbstractAsyncContextManager[Runner]]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "sluiceway.db"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def events() -> list[Event]:
    """Every event the runner from ``make_runner`` published, in order."""
    return []


@pytest.fixture
def make_runner(db_path: Path, clock: FakeClock, events: list[Event]) -> MakeRunner:
    """``async with make_runner(**options) as runner``: a runner on ``db_path`` with the fake
    clock, pools ``warehouse=2`` and ``single=1``, publishing into ``events``."""

    def make(**options: Any) -> AbstractAsyncContextManager[Runner]:
        bus = EventBus()
        bus.subscribe(events.append)
        options.setdefault("clock", clock)
        options.setdefault("pools", {"warehouse": 2, "single": 1})
        return open_test_runner(db_path, bus=bus, **options)

    return make
