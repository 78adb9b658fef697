"""The loop watch's setting, and what it blames when no task is to blame (the tasks' case is
tested on real ``sluiceway run`` and ``serve`` processes, in tests/cli and tests/service)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from runtime.config import Config, load_config
from runtime.engine.loopwatch import LoopWatch
from runtime.errors import ConfigError


def test_loop_block_threshold_defaults_to_a_second(tmp_path: Path) -> None:
    assert load_config(env={}, cwd=tmp_path).loop_block_threshold == 1.0
    assert Config().loop_block_threshold == 1.0


@pytest.mark.parametrize(("value", "seconds"), [("500ms", 0.5), ("2", 2.0), ("0", 0.0)])
def test_loop_block_threshold_from_the_environment(
    tmp_path: Path, value: str, seconds: float
) -> None:
    env = {"SLUICEWAY_LOOP_BLOCK_THRESHOLD": value}
    assert load_config(env=env, cwd=tmp_path).loop_block_threshold == seconds


def test_loop_block_threshold_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "sluiceway.toml").write_text('loop_block_threshold = "250ms"\n')
    assert load_config(env={}, cwd=tmp_path).loop_block_threshold == 0.25


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10ms", "must be 0 (off) or between 50ms and 1h, not '10ms'"),
        ("2h", "must be 0 (off) or between 50ms and 1h, not '2h'"),
        ("soon", "value 'soon' is not a duration"),
    ],
)
def test_a_bad_loop_block_threshold_names_the_variable(
    tmp_path: Path, value: str, message: str
) -> None:
    env = {"SLUICEWAY_LOOP_BLOCK_THRESHOLD": value}
    with pytest.raises(ConfigError) as info:
        load_config(env=env, cwd=tmp_path)
    assert str(info.value).startswith("environment SLUICEWAY_LOOP_BLOCK_THRESHOLD ")
    assert message in str(info.value)


async def test_a_block_outside_any_task_is_reported_as_sluiceways_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="sluiceway.loop")
    with LoopWatch(0.1):  # its first beat is now
        time.sleep(0.5)  # noqa: ASYNC251 - the block under test, outside any task attempt
    blocked, back = [r.getMessage() for r in caplog.records if r.name == "sluiceway.loop"]
    assert blocked.startswith("the event loop has been blocked for ")
    assert "by sluiceway's own code (asyncio task " in blocked
    assert back.startswith("the event loop was blocked for about ")


async def test_no_watch_at_zero(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="sluiceway.loop")
    with LoopWatch(0) as watch:
        time.sleep(0.2)  # noqa: ASYNC251 - no thread watches
    assert watch._thread is None
    assert [r for r in caplog.records if r.name == "sluiceway.loop"] == []
