"""What a resumed run carries over, per stored task row (runner._carry_for_resume)."""

from __future__ import annotations

from typing import Any

import pytest

from runtime import Flow
from runtime.engine.runner import _carry_for_resume


def make_flow() -> Flow:
    flow = Flow("resume")

    @flow.task(retries=0)
    async def once() -> None: ...

    @flow.task(retries=2)
    async def twice() -> None: ...

    @flow.task(retries=5, on_crash="fail")
    async def careful() -> None: ...

    return flow


def row(
    name: str, state: str, attempts: int, error: str | None = None, **more: Any
) -> dict[str, Any]:
    return {
        "name": name,
        "state": state,
        "attempts": attempts,
        "error": error,
        "next_attempt_at": None,
        **more,
    }


@pytest.mark.parametrize(
    ("stored", "interrupted", "fails_with"),
    [
        (row("once", "running", 1), True, "no retries left"),
        (row("twice", "running", 1), True, None),
        (row("twice", "running", 3), True, "no retries left"),
        # a shutdown is not the task's failure: its last try is not used up
        (row("once", "pending", 1), True, None),
        (row("careful", "running", 1), True, "on_crash='fail'"),
        (row("careful", "pending", 1), True, "on_crash='fail'"),
        (row("once", "pending", 0), False, None),
        # the flag decides, not the error text
        (
            row("careful", "pending", 1, "InterruptedRunError: interrupted by service shutdown"),
            False,
            None,
        ),
    ],
    ids=[
        "crash-no-retries",
        "crash-retries-left",
        "crash-retries-spent",
        "shutdown-last-try",
        "on-crash-fail",
        "on-crash-fail-shutdown",
        "never-started",
        "text-without-flag",
    ],
)
def test_interrupted_tasks(
    stored: dict[str, Any], interrupted: bool, fails_with: str | None
) -> None:
    key = (stored["name"], -1)
    flagged = {key} if interrupted else set()
    carry = _carry_for_resume(make_flow(), {"tasks": [stored]}, {}, flagged)
    assert carry.attempts[key] == stored["attempts"]
    if fails_with is None:
        assert key not in carry.failed
    else:
        assert "interrupted by service restart" in carry.failed[key]
        assert fails_with in carry.failed[key]


def test_retrying_tasks_keep_their_next_attempt_time() -> None:
    stored = row("twice", "retrying", 1, next_attempt_at="2026-01-01T10:00:30Z")
    carry = _carry_for_resume(make_flow(), {"tasks": [stored]}, {("once", -1): 1}, set())
    assert carry.not_before[("twice", -1)].isoformat() == "2026-01-01T10:00:30+00:00"
    assert carry.results == {("once", -1): 1}
