"""Every error Sluiceway raises on purpose, plus the two a task may raise: Retry and Skip."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class SluicewayError(Exception):
    """Base of every error Sluiceway raises on purpose."""


# --- flow definitions ---


class FlowValidationError(SluicewayError):
    """A flow (or a folder of flow files) declares something that cannot run; lists every problem."""

    def __init__(self, where: str | Path, problems: Sequence[str]) -> None:
        self.where = str(where)
        self.problems = tuple(problems)
        super().__init__(f"{self.where}: " + "; ".join(self.problems))


class UnknownFlowError(SluicewayError):
    """A command named a flow that no loaded flow file defines."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        hint = ", ".join(sorted(known)) or "none"
        super().__init__(f"unknown flow {name!r} (loaded flows: {hint})")


class UnknownEventError(SluicewayError):
    """An event was sent that no loaded flow listens to (no ``on_event(name)`` trigger)."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"no flow listens to event {name!r}: no loaded flow has on_event({name!r})"
        )


# --- schedules ---


class ScheduleError(SluicewayError):
    """A trigger spec cannot produce fire times; each problem names the spec, field and value.

    :ivar spec: the spec as written, e.g. ``cron('61 * * * *')``
    :ivar problems: every problem found, each a complete sentence
    """

    def __init__(self, spec: str, problems: Sequence[str]) -> None:
        self.spec = spec
        self.problems = tuple(problems)
        super().__init__("; ".join(self.problems))


# --- configuration ---


class ConfigError(SluicewayError):
    """sluiceway.toml or a SLUICEWAY_* variable has a bad key or value; names the key and where."""


# --- runs and the store ---


class ParamError(SluicewayError):
    """A run was given a parameter its flow does not declare, or one that cannot be parsed."""


class RunNotFoundError(SluicewayError):
    """No run with the given id exists in the store."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        super().__init__(f"run {run_id} not found")


class StoreError(SluicewayError):
    """The store could not open, migrate or write its SQLite file."""


# --- raised by tasks ---


class Retry(Exception):
    """Raise inside a task to ask for another attempt now or after *delay*.

    Counts as a failed attempt: when no retries are left the task fails with this message.
    A *delay* that is not a duration (or longer than a year) fails the task at once, with
    an error that says so.

    :param message: why the attempt should be retried (stored with the attempt)
    :param delay: seconds, or a duration such as ``"30s"``, to wait instead of the task's
        backoff; ``None`` uses the backoff
    """

    def __init__(
        self, message: str = "retry requested", *, delay: float | str | None = None
    ) -> None:
        self.delay = delay
        super().__init__(message)


class Skip(Exception):
    """Raise inside a task to end it ``skipped`` with *reason*; downstream tasks follow their rule.

    :param reason: why the task was skipped (shown in ``show`` and the logs)
    """

    def __init__(self, reason: str = "skipped") -> None:
        self.reason = reason
        super().__init__(reason)


class TaskTimeoutError(SluicewayError, TimeoutError):
    """An attempt ran past its task's ``timeout``; counts as a failed attempt."""


class InterruptedRunError(SluicewayError):
    """An attempt was running when its process stopped; recorded on recovery."""


# --- executors (task bodies run elsewhere: executor="dask") ---


class ExecutorError(SluicewayError):
    """An executor could not run an attempt's body or bring back its outcome; the attempt
    fails and the task's retry policy decides (``retry_on`` may name these)."""


class WorkerLostError(ExecutorError):
    """The worker running the attempt died mid-task (its process ended or was killed)."""


class ExecutorConnectionError(ExecutorError):
    """The executor's cluster cannot be reached, or the connection to it was lost while the
    attempt ran; later attempts connect again."""


class ResultNotShippableError(ExecutorError):
    """The body returned a value that cannot travel back from the worker (it does not
    pickle): return a path or a table name instead."""
