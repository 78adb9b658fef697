"""What a caller hands the engine with a run: what earlier executions left (Carry), and a
handle to stop it from outside (RunHandle)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

# (task name, index): -1 for the task itself, or the mapped instance's index
UnitKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Carry:
    """What a run carries over from earlier executions of it (a resumed run) or of the run it
    retries, by (task, index; -1 for the task itself).

    :ivar results: stored results of succeeded tasks; reused when every upstream is reused too
    :ivar attempts: attempts already spent (a resumed run keeps counting)
    :ivar failed: tasks to end failed at once, with the error (interrupted, no tries left)
    :ivar not_before: retrying tasks keep their stored next-attempt time
    """

    results: Mapping[UnitKey, Any] = field(default_factory=dict)
    attempts: Mapping[UnitKey, int] = field(default_factory=dict)
    failed: Mapping[UnitKey, str] = field(default_factory=dict)
    not_before: Mapping[UnitKey, datetime] = field(default_factory=dict)


class Stoppable(Protocol):
    """A run being executed, as its handle sees it."""

    def cancel(self) -> None: ...

    def interrupt(self) -> None: ...


class RunHandle:
    """Lets the caller of :meth:`Engine.execute` cancel or interrupt the run from outside,
    before it starts executing or while it does."""

    def __init__(self) -> None:
        self._execution: Stoppable | None = None
        self._cancel_requested = False
        self._interrupt_requested = False

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel_requested

    @property
    def interrupt_requested(self) -> bool:
        """Whether :meth:`interrupt` was called."""
        return self._interrupt_requested

    def attach(self, execution: Stoppable) -> None:
        """Called by the engine as the run starts executing: requests go to *execution*."""
        self._execution = execution

    def cancel(self) -> None:
        """Cancel running tasks; tasks with ``run_if="all_done"`` still run afterwards."""
        self._cancel_requested = True
        if self._execution is not None:
            self._execution.cancel()

    def interrupt(self) -> None:
        """Stop at once for a service shutdown: running attempts are recorded as interrupted,
        and the run stays ``running`` so the next start resumes it."""
        self._interrupt_requested = True
        if self._execution is not None:
            self._execution.interrupt()
