"""The state rows the writer coalesces: a run's, a task's and an attempt's, one NamedTuple each.

Fields are in the order of the statement that writes them (``runtime.store.schema``), so a row
is bound as it is; code reads them by name.
"""

from __future__ import annotations

from typing import NamedTuple

TaskKey = tuple[int, str, int]  # (run_id, name, idx)
AttemptKey = tuple[int, str, int, int]  # (run_id, name, idx, attempt)


class RunRow(NamedTuple):
    """The changing columns of run ``id`` (``schema.UPDATE_RUN``).

    ``started_at=None`` keeps the stored start: a run queued again, or cancelled while it
    waited, never started.
    """

    id: int
    state: str
    started_at: str | None = None
    ended_at: str | None = None
    error: str | None = None
    wait_reason: str | None = None


class TaskRow(NamedTuple):
    """One task of a run, or one instance of a mapped task (``schema.UPSERT_TASK``).

    :ivar idx: the mapped instance's index, ``-1`` for the task itself
    :ivar result: the encoded result (``codec.encode``) when ``has_result`` is 1
    """

    run_id: int
    name: str
    idx: int
    state: str
    attempts: int
    started_at: str | None
    ended_at: str | None
    next_attempt_at: str | None
    error: str | None
    reason: str | None
    result: bytes | None
    has_result: int

    @property
    def key(self) -> TaskKey:
        return (self.run_id, self.name, self.idx)


class AttemptRow(NamedTuple):
    """One attempt of a task or mapped instance (``schema.UPSERT_ATTEMPT``).

    :ivar interrupted: 1 when a service shutdown stopped the attempt, or a restart found it
        left running: resuming the run decides by the task's ``on_crash`` what comes next
    :ivar worker: where it ran when not in the service's process (a Dask worker's address)
    """

    run_id: int
    name: str
    idx: int
    attempt: int
    state: str
    started_at: str | None
    ended_at: str | None
    error_type: str | None
    error_message: str | None
    traceback: str | None
    interrupted: int
    worker: str | None = None

    @property
    def key(self) -> AttemptKey:
        return (self.run_id, self.name, self.idx, self.attempt)
