"""Server-sent events as bytes: the frames of ``GET /api/stream``, built once per event and
sent as they are to every client that wants them; and which bus events become which frame."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from runtime import codec
from runtime.engine.events import Event, RunEnded, RunStarted, TaskEnded, TaskRetrying, TaskStarted
from runtime.states import RunState, TaskState
from runtime.store.live import LogLine

RETRY_MS = 2000  # how long a browser's EventSource waits before it reconnects
HELLO = f"retry: {RETRY_MS}\n\n".encode()
PING = b": ping\n\n"
RESYNC = b'event: resync\ndata: {"reason": "the client fell behind; reload the page"}\n\n'


@dataclass(frozen=True, slots=True)
class Frame:
    """One event for the clients: its run and flow (to pick the clients) and its bytes."""

    run_id: int
    flow: str
    data: bytes


def encode(kind: str, data: Any, event_id: int | None = None) -> bytes:
    """``event: KIND`` (and ``id: N``) with *data* as one line of JSON; orjson writes no
    newline, so a message with line breaks stays one ``data:`` line."""
    head = f"id: {event_id}\nevent: {kind}\n" if event_id is not None else f"event: {kind}\n"
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def run_frame(run_id: int, flow: str, state: str, ts: str | None) -> Frame:
    """``event: run`` with ``{"run_id", "flow", "state", "ts"}``."""
    data = {"run_id": run_id, "flow": flow, "state": state, "ts": ts}
    return Frame(run_id, flow, encode("run", data))


def log_frame(line: LogLine, flow: str) -> Frame:
    """``event: log`` with ``{"id", "run_id", "task", "ts", "level", "message"}``; the SSE id
    is the line's, so a reconnecting browser resumes after it (``Last-Event-ID``)."""
    return Frame(line.run_id, flow, encode("log", line.as_dict(), line.id))


def bus_frame(event: Event) -> Frame | None:
    """The frame of an engine event: run started and ended, task started, retrying and
    ended; ``None`` for the others (a failed check is no change of state)."""
    ts = codec.iso(event.ts)
    if isinstance(event, RunStarted):
        return run_frame(event.run_id, event.flow, RunState.RUNNING.value, ts)
    if isinstance(event, RunEnded):
        return run_frame(event.run_id, event.flow, event.state.value, ts)
    if isinstance(event, TaskStarted):
        return _task(event, TaskState.RUNNING.value, event.attempt, ts)
    if isinstance(event, TaskRetrying):
        return _task(event, TaskState.RETRYING.value, event.attempt, ts)
    if isinstance(event, TaskEnded):
        return _task(event, event.state.value, event.attempts, ts)
    return None


def _task(
    event: TaskStarted | TaskRetrying | TaskEnded, state: str, attempt: int, ts: Any
) -> Frame:
    data = {
        "run_id": event.run_id,
        "flow": event.flow,
        "task": event.task,
        "name": event.name,
        "index": event.index,
        "state": state,
        "attempt": attempt,
        "ts": ts,
    }
    return Frame(event.run_id, event.flow, encode("task", data))
