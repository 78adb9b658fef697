"""What a task sees through its ``run`` parameter, and the log adapter whose lines are stored."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from datetime import datetime
from typing import Any

from runtime import codec
from runtime.define.checks import CheckResult, check_problems, make_result

LogSink = Callable[[tuple[Any, ...]], None]
CheckSink = Callable[[CheckResult], None]

_task_logger = logging.getLogger("sluiceway.task")


class TaskLogger(logging.LoggerAdapter[logging.Logger]):
    """``run.log``: a logger whose lines are stored with the attempt and shown by the CLI.

    Lines also go to the ``sluiceway.task`` logger, so the service's own logging sees them.
    """

    def __init__(
        self,
        sink: LogSink,
        ident: tuple[int, str, int, int],
        label: str,
        now: Callable[[], datetime],
    ) -> None:
        super().__init__(_task_logger, {"sluiceway_task": label})
        self._sink = sink
        self._now = now
        self._ident = ident
        self._label = label

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        message = str(msg) % args if args else str(msg)
        if kwargs.get("exc_info"):
            import traceback

            message += "\n" + traceback.format_exc().rstrip()
        run_id, name, idx, attempt = self._ident
        stamp = codec.iso(self._now())
        self._sink((run_id, name, idx, attempt, stamp, logging.getLevelName(level), message))
        if self.logger.isEnabledFor(level):
            extra = {"sluiceway_task": self._label, "sluiceway_message": message}
            self.logger.log(level, "run=%s task=%s %s", run_id, self._label, message, extra=extra)

    @property
    def ident(self) -> tuple[int, str, int, int]:
        """``(run_id, task name, idx, attempt)``: whose lines these are."""
        return self._ident

    def replay(self, stamp: str, level: str, message: str) -> None:
        """Store a line the task logged elsewhere (on a Dask worker) at *stamp*, as if it had
        been logged here."""
        run_id, name, idx, attempt = self._ident
        self._sink((run_id, name, idx, attempt, stamp, level, message))
        number = logging.getLevelName(level)
        if isinstance(number, int) and self.logger.isEnabledFor(number):
            extra = {"sluiceway_task": self._label, "sluiceway_message": message}
            self.logger.log(number, "run=%s task=%s %s", run_id, self._label, message, extra=extra)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return msg, kwargs


class TriggerInfo(Mapping[str, Any]):
    """What started a run, read as ``run.trigger.kind`` or ``run.trigger["kind"]``.

    ``kind`` is ``manual``, ``schedule`` (with ``spec`` and ``scheduled``), ``retry`` (with
    ``run_id``), ``backfill``, ``file`` (``path`` absolute, ``size``, ``mtime``; ``paths``
    for a batch), ``event`` (``name``, ``payload``), ``flow`` (the upstream's ``flow``,
    ``run_id``, ``state``, ``logical_date``, ``params``) or ``api`` (a run queued over HTTP).
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_data":
            # copy and pickle look up dunders (and _data) before __init__ ran: not fields
            raise AttributeError(name)
        try:
            return self._data[name]
        except KeyError:
            have = ", ".join(self._data) or "nothing"
            raise AttributeError(
                f"this {self._data.get('kind')!r} trigger has no {name!r} (it has {have})"
            ) from None

    def __repr__(self) -> str:
        return f"TriggerInfo({self._data!r})"


class Run:
    """The run context, passed to a task parameter named ``run``.

    :ivar id: the run's id in the store
    :ivar flow: the flow's name
    :ivar task: this task's name (``load[3]`` for instance 3 of a mapped task)
    :ivar index: the mapped instance's index, or ``None``
    :ivar logical_date: the instant this run is for (aware, UTC)
    :ivar params: the run's parameters after overrides
    :ivar trigger: what started the run (:class:`TriggerInfo`): ``run.trigger.kind``
    :ivar attempt: this attempt's number, from 1
    :ivar key: ``flow/logical_date/task``, stable across attempts and retries: use it for
        idempotent writes
    :ivar log: a logger whose lines are stored with this attempt
    :ivar failed_checks: the ``severity="error"`` checks of this attempt that failed
    """

    __slots__ = (
        "_on_check",
        "attempt",
        "failed_checks",
        "flow",
        "id",
        "index",
        "key",
        "log",
        "logical_date",
        "params",
        "task",
        "trigger",
    )

    def __init__(
        self,
        *,
        id: int,
        flow: str,
        task: str,
        index: int | None,
        logical_date: datetime,
        params: Mapping[str, Any],
        trigger: Mapping[str, Any],
        attempt: int,
        log: logging.LoggerAdapter[logging.Logger],
        on_check: CheckSink | None = None,
    ) -> None:
        self.id = id
        self.flow = flow
        self.task = task
        self.index = index
        self.logical_date = logical_date
        self.params = params
        self.trigger = trigger if isinstance(trigger, TriggerInfo) else TriggerInfo(trigger)
        self.attempt = attempt
        self.log = log
        self.key = f"{flow}/{codec.iso(logical_date)}/{task}"
        self._on_check = on_check
        self.failed_checks: list[CheckResult] = []

    def check(
        self, name: str, passed: object, *, detail: object = None, severity: str = "error"
    ) -> bool:
        """Record a data-quality check and return whether it passed.

        ``run.check("row_count", n > 0, detail=f"{n} rows")``. A failed check records a
        ``quality.failed`` event (and alert); with ``severity="error"`` (the default) the
        task's attempt fails once the task returns, so every check of it is recorded first;
        ``"warn"`` only records and alerts. Checks appear in ``sluiceway show``.

        :raises ValueError: for a bad *name* or *severity* (a mistake in the task's code)
        """
        problems = check_problems(name, severity)
        if problems:
            raise ValueError(f"run.check: {'; '.join(problems)}")
        result = make_result(name, passed, detail, severity)
        self.take_check(result)
        return result.passed

    def take_check(self, result: CheckResult) -> None:
        """Record a check made (by :meth:`check`, here or on a Dask worker)."""
        if not result.passed and result.severity == "error":
            self.failed_checks.append(result)
        if self._on_check is not None:
            self._on_check(result)

    def __repr__(self) -> str:
        return f"Run(id={self.id}, flow={self.flow!r}, task={self.task!r}, attempt={self.attempt})"
