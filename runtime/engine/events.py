"""Lifecycle events published by the engine; the CLI, alerts and the API subscribe to them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from runtime.states import RunState, TaskState

log = logging.getLogger("sluiceway.runtime.events")


@dataclass(frozen=True, slots=True)
class Event:
    """Something happened to a run; ``ts`` is the clock's time."""

    ts: datetime
    run_id: int
    flow: str


@dataclass(frozen=True, slots=True)
class RunStarted(Event):
    """A queued run began executing.

    :ivar scheduled: the instant its schedule fired for, when this is the first start of a
        scheduled run (``ts - scheduled`` is how late the fire started); else ``None``
    """

    scheduled: datetime | None = None


@dataclass(frozen=True, slots=True)
class RunEnded(Event):
    """A run reached a terminal state."""

    state: RunState
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TaskEvent(Event):
    """Something happened to a task, or to one instance of a mapped task.

    :ivar task: the label to show: ``load``, or ``load[3]`` for instance 3 of a mapped task
    :ivar name: the task's name, ``load`` for its instances too
    :ivar index: the mapped instance's index, ``None`` for a task itself
    """

    task: str
    name: str
    index: int | None


@dataclass(frozen=True, slots=True)
class TaskStarted(TaskEvent):
    """An attempt of a task (or of a mapped instance) started."""

    attempt: int


@dataclass(frozen=True, slots=True)
class TaskRetrying(TaskEvent):
    """An attempt failed and the next one is due after ``delay`` seconds."""

    attempt: int
    delay: float
    error: str


@dataclass(frozen=True, slots=True)
class TaskEnded(TaskEvent):
    """A task or mapped instance reached a terminal state."""

    state: TaskState
    attempts: int
    duration: float | None
    error: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class CheckFailed(TaskEvent):
    """A data-quality check of a task failed (recorded as a ``quality.failed`` event)."""

    attempt: int
    check: str
    detail: str | None
    severity: str


Subscriber = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out to subscribers. A subscriber must not block: it hands the event on
    (to a memory stream, a queue) and returns. A subscriber that raises is logged and kept."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        """Add *fn*; returns a function that removes it (calling it again does nothing)."""
        self._subscribers.append(fn)

        def unsubscribe() -> None:
            if fn in self._subscribers:
                self._subscribers.remove(fn)

        return unsubscribe

    def __bool__(self) -> bool:
        """True when someone listens: the engine builds per-task events only then."""
        return bool(self._subscribers)

    def publish(self, event: Event) -> None:
        # over a copy: a subscriber may unsubscribe (itself or another) while handling it
        for fn in tuple(self._subscribers):
            try:
                fn(event)
            except Exception:
                log.exception("event subscriber %r failed on %s", fn, type(event).__name__)
