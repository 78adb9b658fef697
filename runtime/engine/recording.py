"""Turns the engine's units into store rows: task rows built once per batch, attempt rows,
stored log lines."""

from __future__ import annotations

import functools
import logging
import traceback
from datetime import datetime

from runtime import codec
from runtime.codec import iso
from runtime.define.checks import CheckResult
from runtime.engine.rules import S
from runtime.engine.units import Unit
from runtime.states import TaskState
from runtime.store import Store
from runtime.store.rows import AttemptRow, TaskRow
from runtime.store.schema import INSERT_CHECK

log = logging.getLogger("sluiceway.runtime.recording")


class Recorder:
    """Records one run's state changes; nothing here awaits the store."""

    __slots__ = ("max_bytes", "run_id", "store", "unstored")

    def __init__(self, store: Store, run_id: int, max_bytes: int) -> None:
        self.store = store
        self.run_id = run_id
        self.max_bytes = max_bytes
        self.unstored: set[tuple[str, int]] = set()  # results not stored, each logged once

    def task(self, unit: Unit, next_at: datetime | None) -> None:
        """Queue *unit*'s row; it is built from the unit's newest state when the batch is
        taken, so several changes within one batch cost one row."""
        unit.next_at = next_at
        if unit.maker is None:
            unit.key = (self.run_id, unit.node.name, unit.idx)
            unit.maker = functools.partial(self._row, unit)
        self.store.put_task_from(unit.key, unit.maker)

    def _row(self, unit: Unit) -> TaskRow:
        stored, has, reason = None, 0, unit.reason
        if unit.state is S.SUCCEEDED:
            # stored only when it reads back as the same value (codec.encode); otherwise it
            # is kept in memory for downstream tasks, and a retry or resume runs it again
            try:
                stored = codec.encode(unit.result, max_bytes=self.max_bytes)
                has = 1
            except codec.NotSerializable as exc:
                note = f"result not stored, so a retry or resume runs it again: {exc}"
                reason = note if reason is None else f"{reason}; {note}"
                if (unit.node.name, unit.idx) not in self.unstored:
                    self.unstored.add((unit.node.name, unit.idx))
                    log.warning("run=%s task=%s %s", self.run_id, unit.label, note)
        return TaskRow(
            self.run_id,
            unit.node.name,
            unit.idx,
            str(unit.state),
            unit.attempts,
            iso(unit.started_at),
            iso(unit.ended_at),
            iso(unit.next_at),
            unit.error,
            reason,
            stored,
            has,
        )

    def attempt(
        self,
        unit: Unit,
        attempt: int,
        state: TaskState,
        now: datetime,
        error: BaseException | None,
        *,
        interrupted: bool = False,
    ) -> None:
        """Queue attempt *attempt* of *unit* in *state*; *interrupted*: a service shutdown
        stopped it (recorded failed, flagged so that resuming tells it from a failure)."""
        if state is S.RUNNING:
            unit.attempt_start = now
            self.store.put_attempt_from(
                (self.run_id, unit.node.name, unit.idx, attempt),
                functools.partial(self._running_attempt, unit, attempt, now),
            )
            return
        self.store.put_attempt(
            AttemptRow(
                self.run_id,
                unit.node.name,
                unit.idx,
                attempt,
                str(state),
                iso(unit.attempt_start),
                iso(now),
                type(error).__name__ if error else None,
                error_text(error) if error else None,
                format_error(error) if error else None,
                int(interrupted),
                unit.where,
            )
        )

    def _running_attempt(self, unit: Unit, attempt: int, start: datetime) -> AttemptRow:
        name, idx = unit.node.name, unit.idx
        return AttemptRow(
            self.run_id, name, idx, attempt, "running", iso(start), None, None, None, None, 0
        )

    def check(self, unit: Unit, attempt: int, now: datetime, result: CheckResult) -> None:
        """Queue a check's row; a failed one also queues a ``quality.failed`` event."""
        stamp = iso(now)
        row = (
            self.run_id,
            unit.node.name,
            unit.idx,
            attempt,
            stamp,
            result.name,
            int(result.passed),
            result.severity,
            result.detail,
        )
        self.store.writer.put_op(lambda db: db.execute(INSERT_CHECK, row))
        if not result.passed:
            payload = {
                "check": result.name,
                "detail": result.detail,
                "severity": result.severity,
                "attempt": attempt,
            }
            event = (stamp, "quality.failed", self.run_id, unit.label, codec.dumps_str(payload))
            self.store.add_event(event)

    def log(self, unit: Unit, attempt: int, now: datetime, level: str, msg: str) -> None:
        self.store.add_log((self.run_id, unit.node.name, unit.idx, attempt, iso(now), level, msg))


_RUNTIME_DIR = __file__.rsplit("/", 1)[0]


def format_error(error: BaseException) -> str:
    """The traceback from the task's own frames on: the engine's frames are noise here."""
    tb = error.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR):
        tb = tb.tb_next
    try:
        # with no frame of its own left, the error still shows what caused it
        return "".join(traceback.format_exception(type(error), error, tb)).rstrip()
    except BaseException as exc:  # noqa: BLE001 - a task's odd error must not stop its recording
        why = f"formatting it raised {type(exc).__name__}"
        return f"{describe_error(error)} (no traceback: {why})"


def error_text(error: BaseException) -> str:
    """``str(error)``, defensively: an exception whose ``__str__`` raises (or returns no str)
    is still recorded, as a placeholder that names what went wrong."""
    try:
        text = str(error)
    except BaseException as exc:  # noqa: BLE001 - whatever a task's exception does
        return f"<str() of {type(error).__name__} raised {type(exc).__name__}>"
    return text


def describe_error(error: BaseException) -> str:
    """``Type: message``, as stored in a task's ``error`` column and shown by ``show``."""
    return f"{type(error).__name__}: {error_text(error)}"
