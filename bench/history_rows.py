"""The rows of a generated history (bench/history.py): one run at a time, its tasks, mapped
instances, attempts, log lines, checks, events and alert outbox rows, as tuples ready for
``executemany``. Seeded: the same arguments give the same history."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

FLOW_NAMES = (
    "orders",
    "billing",
    "clickstream",
    "inventory",
    "warehouse_sync",
    "crm_export",
    "fx_rates",
    "audit_trail",
)
# how often each flow runs, relative: the last flows are rare (a selective filter)
WEIGHTS = (30, 22, 16, 12, 8, 6, 4, 2)
TASKS = ("extract", "validate", "transform", "load", "publish")
KINDS = ("schedule", "manual", "api", "event", "file", "flow", "backfill", "retry")
KIND_WEIGHTS = (58, 4, 8, 8, 8, 6, 5, 3)
ERRORS = (
    ("ConnectionResetError", "[Errno 104] Connection reset by peer"),
    ("TimeoutError", "read from warehouse timed out after 30s"),
    ("KeyError", "'customer_id'"),
    ("ValueError", "invalid literal for int() with base 10: 'N/A'"),
    ("OperationalError", "could not serialize access due to concurrent update"),
)
WORDS = [
    "orders",
    "customers",
    "invoices",
    "payments",
    "refunds",
    "shipments",
    "sessions",
    "pageviews",
    "products",
    "stock",
    "rates",
    "ledger",
    "accounts",
    "events",
    "partitions",
    "parquet",
    "csv",
    "manifest",
    "warehouse",
    "staging",
]
LEVELS = ("INFO", "INFO", "INFO", "INFO", "DEBUG", "WARNING")


_MINUTES: dict[int, str] = {}


def iso(t: float) -> str:
    """Unix seconds (after 1970) as the store's ISO text, fixed width (microseconds always).
    The minute's text is cached: ``datetime.isoformat`` was half of the generator's time."""
    whole = int(t)
    minute, second = divmod(whole, 60)
    prefix = _MINUTES.get(minute)
    if prefix is None:
        if len(_MINUTES) > 1_000_000:
            _MINUTES.clear()
        moment = datetime.fromtimestamp(minute * 60, UTC)
        prefix = _MINUTES[minute] = moment.strftime("%Y-%m-%dT%H:%M:")
    return f"{prefix}{second:02d}.{int((t - whole) * 1e6):06d}Z"


def traceback_text(task: str, etype: str, message: str) -> str:
    return (
        "Traceback (most recent call last):\n"
        '  File "/srv/flows/pipeline.py", line 42, in ' + task + "\n"
        "    rows = source.fetch(batch)\n"
        '  File "/srv/flows/lib/source.py", line 118, in fetch\n'
        "    raise " + etype + "(" + repr(message) + ")\n"
        f"{etype}: {message}"
    )


@dataclass(slots=True)
class Rows:
    """The rows of one batch of runs, per table."""

    tables: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {
            t: [] for t in ("runs", "tasks", "attempts", "logs", "checks", "events", "outbox")
        }
    )


class RunMaker:
    """Builds runs one id after another; the history ends at *end* with running and queued
    runs, starts *days* before with succeeded ones."""

    def __init__(
        self,
        names: list[str],
        *,
        instances: int,
        retry_rate: float,
        failure_rate: float,
        log_rate: float,
        first: datetime,
        end: datetime,
        runs: int,
        seed: int,
    ) -> None:
        self.names = names
        self.weights = [WEIGHTS[i] if i < len(WEIGHTS) else 2 for i in range(len(names))]
        self.instances = instances
        self.retry_rate, self.failure_rate, self.log_rate = retry_rate, failure_rate, log_rate
        self.t0, self.t1 = first.timestamp(), end.timestamp()
        self.end_iso = iso(self.t1)
        self.runs = runs
        self.rng = random.Random(seed)
        self.open_from = runs - max(8, runs // 2000)  # the newest runs are still going
        self.last_failed: dict[str, int] = {}
        self.log_id = 0

    def flow_rows(self) -> Iterator[tuple[str, str]]:
        for name in self.names:
            yield name, self.end_iso

    def batch(self, first_id: int, last_id: int) -> dict[str, list[tuple[Any, ...]]]:
        rows = Rows()
        for run_id in range(first_id, last_id + 1):
            self.run(run_id, rows.tables)
        return rows.tables

    def run(self, run_id: int, out: dict[str, list[tuple[Any, ...]]]) -> None:
        rng = self.rng
        flow = rng.choices(self.names, self.weights)[0]
        if run_id > self.open_from and run_id % 4 == 0:
            flow = self.names[-1]  # the paused flow's runs pile up in the queue
        span = (self.t1 - self.t0 - 3600) / max(1, self.runs)
        created = self.t0 + (run_id - 1) * span + rng.random() * span * 0.5
        state = self._state(run_id, flow, rng)
        kind = rng.choices(KINDS, KIND_WEIGHTS)[0]
        trigger, logical, retry_of = self._trigger(kind, flow, created, rng)
        started = created + 0.2 + rng.random() * 3 if state != "queued" else None
        ended, error = None, None
        if started is not None:
            ended, error = self._tasks(run_id, flow, state, started, out)
        wait = None
        if state == "queued" and flow != self.names[-1] and run_id % 2:
            wait = f"flow {flow!r} is at max_active_runs=1 (run {run_id - 1} is running)"
        out["runs"].append(
            (
                run_id,
                flow,
                state,
                '{"day":"' + iso(created)[:10] + '","full":false}',
                orjson.dumps(trigger).decode(),
                iso(logical),
                None if kind not in ("schedule", "file") else f"{kind}:{run_id}",
                retry_of,
                iso(created),
                None if started is None else iso(started),
                None if ended is None else iso(ended),
                error,
                wait,
            )
        )
        if state == "failed":
            self.last_failed[flow] = run_id
            self._alerts(run_id, flow, "run.failed", created, out)
        if rng.random() < 0.03 or (state in ("queued", "running") and run_id % 3 == 0):
            self._sla(run_id, flow, created, out)

    def _state(self, run_id: int, flow: str, rng: random.Random) -> str:
        if run_id > self.open_from:
            return "queued" if run_id % 2 == 0 or flow == self.names[-1] else "running"
        roll = rng.random()
        if roll < self.failure_rate:
            return "failed"
        return "cancelled" if roll < self.failure_rate + 0.01 else "succeeded"

    def _trigger(
        self, kind: str, flow: str, created: float, rng: random.Random
    ) -> tuple[dict[str, Any], float, int | None]:
        hour = created - created % 3600
        if kind == "schedule":
            spec = "cron('0 * * * *')" if rng.random() < 0.7 else "every('15m')"
            return {"kind": kind, "spec": spec, "scheduled": iso(hour)}, hour, None
        if kind == "backfill":
            old = hour - 86400 * rng.randint(30, 400)
            return {"kind": kind, "spec": "cron('0 * * * *')", "via": "cli"}, old, None
        if kind == "retry" and flow in self.last_failed:
            first = self.last_failed[flow]
            return {"kind": kind, "run_id": first}, created, first
        if kind == "event":
            return {"kind": kind, "name": "landed", "payload": {"rows": 1200}}, created, None
        if kind == "file":
            path = f"/data/inbox/{flow}/{iso(created)[:10]}-{rng.randint(1, 999):03d}.csv"
            return {"kind": kind, "path": path, "size": 81234, "mtime": created}, created, None
        if kind == "flow":
            up = self.names[0] if flow != self.names[0] else self.names[-1]
            return {"kind": kind, "flow": up, "run_id": 1, "state": "succeeded"}, created, None
        if kind == "api":
            return {"kind": kind, "via": "http", "remote": "127.0.0.1"}, created, None
        return {"kind": "manual", "via": "cli"}, created, None

    def _tasks(
        self, run_id: int, flow: str, state: str, started: float, out: dict[str, list[Any]]
    ) -> tuple[float | None, str | None]:
        """The run's units in order: (ended_at, error) of the run."""
        units = [(name, -1) for name in TASKS[:3]]
        units += [("load", i) for i in range(self.instances)] + [("publish", -1)]
        # where a failed, cancelled or running run stops; a succeeded one runs every unit
        stop = len(units) if state == "succeeded" else self.rng.randrange(len(units))
        t, error = started, None
        load_start = load_end = started
        load_state = "succeeded"
        for pos, (name, idx) in enumerate(units):
            unit_state = _unit_state(pos, stop, state)
            if name != "load":
                t, err = self._unit(run_id, flow, name, idx, unit_state, t, out)
                error = err or error
                continue
            if idx == 0:
                load_start = load_end = t  # the instances run side by side
            end, err = self._unit(run_id, flow, name, idx, unit_state, load_start, out)
            error, load_end = err or error, max(load_end, end)
            if unit_state != "succeeded" and load_state == "succeeded":
                load_state = unit_state
            if idx == self.instances - 1:
                self._task_row(run_id, "load", -1, load_state, load_start, load_end, out)
                t = load_end
        ended = t if state in ("succeeded", "failed", "cancelled") else None
        if state == "failed":
            return ended, f"task failed: {error}"
        return ended, "cancelled by request" if state == "cancelled" else None

    def _unit(
        self,
        run_id: int,
        flow: str,
        name: str,
        idx: int,
        state: str,
        begin: float,
        out: dict[str, list[Any]],
    ) -> tuple[float, str | None]:
        """One task or instance: its attempts, logs and row; (end time, error text)."""
        rng = self.rng
        if state in ("pending", "upstream_failed") or (state == "cancelled" and rng.random() < 0.5):
            reason = "an upstream task failed" if state == "upstream_failed" else None
            if state == "pending" and run_id % 3 == 0:
                reason = "waits for a slot of pool 'warehouse' (2 of 2 taken)"
            out["tasks"].append((run_id, name, idx, state, 0, None, None, None, None, reason))
            return begin, None
        # a running run's current unit either runs or waits to retry after a failed attempt
        retrying = state == "running" and run_id % 4 == 1
        tries = 1
        if state == "failed":
            tries = 3
        elif state == "succeeded" and rng.random() < self.retry_rate:
            tries = 2 if rng.random() < 0.8 else 3
        t = begin + rng.random()
        error = None
        for attempt in range(1, tries + 1):
            last = attempt == tries
            a_state = "failed" if retrying or not last else state
            duration = 1 + rng.random() * (40 if name in ("transform", "load") else 8)
            a_end = t + duration
            etype = emsg = tb = None
            if a_state == "failed":
                etype, emsg = ERRORS[int(rng.random() * len(ERRORS))]
                tb = traceback_text(name, etype, emsg)
                error = f"{etype}: {emsg}"
            running = a_state == "running"
            out["attempts"].append(
                (run_id, name, idx, attempt, a_state, iso(t), None if running else iso(a_end),
                 etype, emsg, tb, 0)
            )  # fmt: skip
            self._logs(run_id, name, idx, attempt, t, duration, a_state, out)
            if name == "validate" and last:
                self._checks(run_id, attempt, a_end, out)
            t = a_end + (2**attempt if not last else 0)
        next_at = iso(self.t1 + 60) if retrying else None
        row_state = "retrying" if retrying else state
        reason = "attempt 2 of 3 waits for its backoff" if retrying else None
        ended = None if state == "running" else iso(t)
        out["tasks"].append(
            (run_id, name, idx, row_state, tries, iso(begin), ended, next_at,
             error if state == "failed" or retrying else None, reason)
        )  # fmt: skip
        return t, None if retrying else error

    def _task_row(
        self, run_id: int, name: str, idx: int, state: str, begin: float, end: float, out: Any
    ) -> None:
        if state in ("pending", "upstream_failed"):
            out["tasks"].append((run_id, name, idx, state, 0, None, None, None, None, None))
            return
        ended = iso(end) if state != "running" else None
        out["tasks"].append((run_id, name, idx, state, 0, iso(begin), ended, None, None, None))

    def _logs(
        self,
        run_id: int,
        name: str,
        idx: int,
        attempt: int,
        t: float,
        duration: float,
        state: str,
        out: dict[str, list[Any]],
    ) -> None:
        rng = self.rng
        count = int(self.log_rate) + (rng.random() < self.log_rate % 1)
        for n in range(count):
            word = WORDS[int(rng.random() * len(WORDS))]
            rows = 1 + int(rng.random() * 250_000)
            level = LEVELS[int(rng.random() * len(LEVELS))]
            if n == count - 1 and state == "failed":
                level, message = "ERROR", f"{name} failed on {word}: attempt {attempt} gave up"
            elif n % 3 == 0:
                message = f"{name}: fetched {rows} {word} rows from s3://lake/{word}/part-{n:04d}"
            elif n % 3 == 1:
                message = f"{name}: wrote {rows} rows into warehouse.{word}_{run_id % 97}"
            else:
                message = f"{name}: {word} batch {n} took {rows % 9000} ms (run {run_id})"
            ts = iso(t + duration * (n + 1) / (count + 1))
            out["logs"].append((run_id, name, idx, attempt, ts, level, message))

    def _checks(self, run_id: int, attempt: int, at: float, out: dict[str, list[Any]]) -> None:
        passed = self.rng.random() > 0.04
        out["checks"].append(
            (run_id, "validate", -1, attempt, iso(at), "row_count > 0", 1, "error", None)
        )
        detail = None if passed else '{"nulls": 12}'
        out["checks"].append(
            (run_id, "validate", -1, attempt, iso(at), "no null ids", int(passed), "warn", detail)
        )
        if not passed:
            payload = '{"check":"no null ids","severity":"warn"}'
            out["events"].append((iso(at), "quality.failed", run_id, "validate", payload))

    def _sla(self, run_id: int, flow: str, created: float, out: dict[str, list[Any]]) -> None:
        at = created + 1800
        payload = orjson.dumps({"flow": flow, "sla": 1800, "deadline": iso(at)}).decode()
        out["events"].append((iso(at), "sla.missed", run_id, None, payload))
        self._alerts(run_id, flow, "sla.missed", at, out)

    def _alerts(
        self, run_id: int, flow: str, event: str, at: float, out: dict[str, list[Any]]
    ) -> None:
        payload = orjson.dumps({"kind": "alert", "event": event, "flow": flow, "run_id": run_id})
        for destination in (
            ("slack-data", "pagerduty") if event == "run.failed" else ("slack-data",)
        ):
            roll = self.rng.random()
            error: str | None = None
            answer: str | None = "ok"
            state, tries = "delivered", 1
            if roll < 0.05:
                state, tries, error, answer = "dead", 8, "HTTP 503 from hooks.slack.com", None
            elif run_id > self.open_from:
                state, tries, error, answer = "pending", 1, "timed out after 10s", None
            delivered = iso(at + 2) if state == "delivered" else None
            out["outbox"].append(
                (iso(at), event, "alert", flow, run_id, None, destination, state, tries,
                 at + 30, error, answer, delivered, payload.decode())
            )  # fmt: skip


def _unit_state(pos: int, stop: int, run_state: str) -> str:
    """The state of the unit at *pos* of a run that stops at unit *stop*."""
    if pos < stop:
        return "succeeded"
    if pos == stop:
        return {"failed": "failed", "cancelled": "cancelled"}.get(run_state, "running")
    return {"failed": "upstream_failed", "cancelled": "cancelled"}.get(run_state, "pending")
