"""Shared fixtures: a SQLite file in tmp_path, a fake clock, a runner factory on both, and
the scene for the CLI run in process; and the rule that a test starting a process is marked
``slow``, so that ``pytest -m "not slow"`` is a quick run that starts none.

pytest-asyncio runs an async fixture's setup and teardown in different tasks, so a fixture
cannot hold the store's task group open across ``yield``: tests open the runner themselves,
``async with make_runner() as runner:``.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from runtime.engine.events import Event, EventBus
from runtime.engine.runner import Runner
from runtime.testing import FakeClock, open_test_runner
from tests.cli_helpers import CLI_LOGGERS
from tests.service.served import Home

MakeRunner = Callable[..., AbstractAsyncContextManager[Runner]]


@pytest.fixture(autouse=True)
def _slow_if_it_starts_a_process(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test that starts a process (sluiceway, python, mount...) without the ``slow``
    mark, at its teardown, naming the command."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    started: list[str] = []
    real_init = subprocess.Popen.__init__

    def spy(self: subprocess.Popen[Any], args: Any, *more: Any, **options: Any) -> None:
        started.append(repr(args)[:200])
        real_init(self, args, *more, **options)

    monkeypatch.setattr(subprocess.Popen, "__init__", spy)
    yield
    if started:
        pytest.fail(
            f"this test starts a process ({started[0]}): mark it @pytest.mark.slow", pytrace=False
        )


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


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For ``main([...])`` in process: the cwd is tmp_path (no sluiceway.toml unless the test
    writes one), no SLUICEWAY_* variables, and the logging the CLI sets up is undone after."""
    for var in [v for v in os.environ if v.startswith("SLUICEWAY_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    loggers = [logging.getLogger(name) for name in CLI_LOGGERS]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield tmp_path
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """A folder for one test's services (``sluiceway serve`` subprocesses); any service still
    running at the end is killed."""
    home = Home(tmp_path)
    try:
        yield home
    finally:
        home.cleanup()
