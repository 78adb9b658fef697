"""Trigger rules: given the end states of a task's upstreams, run it, skip it, or fail it."""

from __future__ import annotations

from collections.abc import Iterable

from runtime.states import FAILED_STATES, TaskState

S = TaskState


def decide(rule: str, upstream: Iterable[TaskState]) -> tuple[TaskState | None, str | None]:
    """Return ``(None, None)`` to run the task, or the state it ends in and why.

    Called once every upstream has ended. A rule that can no longer be met ends the task
    ``skipped``, except ``all_succeeded`` (the default), which keeps ``upstream_failed`` when
    an upstream failed. A cancelled upstream cancels the task under every rule but
    ``all_done``, and ``any_failed`` once another upstream failed (the on-failure path runs).
    """
    states = list(upstream)
    failed = sum(s in FAILED_STATES for s in states)
    succeeded = sum(s is S.SUCCEEDED for s in states)
    skipped = sum(s is S.SKIPPED for s in states)
    cancelled = sum(s is S.CANCELLED for s in states)
    total = len(states)
    if rule == "all_done":
        return None, None
    if cancelled and rule != "any_failed":
        return S.CANCELLED, "upstream cancelled"
    if rule == "all_succeeded":
        if failed:
            return S.UPSTREAM_FAILED, "an upstream task failed"
        if skipped:
            return S.SKIPPED, "an upstream task was skipped"
        return None, None
    if rule == "any_failed":
        if failed:
            return None, None
        if cancelled:
            return S.CANCELLED, "upstream cancelled"
        return S.SKIPPED, "no upstream task failed"
    if rule == "all_failed":
        if failed == total:
            return None, None
        return S.SKIPPED, "not every upstream task failed"
    if rule == "none_failed":
        if failed:
            return S.SKIPPED, "an upstream task failed"
        return None, None
    if rule == "any_succeeded":
        if succeeded:
            return None, None
        return S.SKIPPED, "no upstream task succeeded"
    raise ValueError(f"unknown run_if {rule!r}")
