"""Read queries for ``/metrics``: what changes by the second (runs queued or running, alert
deliveries, file claims), cheap through partial and state indexes, read at a scrape; and the
ended runs of the whole history, a full scan, read far less often."""

from __future__ import annotations

import sqlite3
from typing import NamedTuple

from runtime import codec


class StoreGauges(NamedTuple):
    """What the history holds now, for gauges.

    :ivar runs: (flow, state, count) of the runs queued or running
    :ivar queued: (flow, count, age of the oldest in seconds) of queued runs
    :ivar outbox: (destination, state, count) of alert deliveries not delivered
        (``held`` in a digest window, ``pending``, ``dead``)
    :ivar claims: (flow, count) of file claims whose file was not settled after its run
    """

    runs: list[tuple[str, str, int]]
    queued: list[tuple[str, int, float]]
    outbox: list[tuple[str, str, int]]
    claims: list[tuple[str, int]]


def read_gauges(conn: sqlite3.Connection, now: float) -> StoreGauges:
    """Every count of :class:`StoreGauges` in one read transaction (a consistent snapshot).

    :param now: unix seconds, for the age of the oldest queued run
    """
    conn.execute("BEGIN")  # one snapshot: the counts agree with each other
    try:
        # through the index runs_by_state: the live runs, not the history
        runs = conn.execute(
            "SELECT flow, state, COUNT(*) FROM runs WHERE state IN ('queued', 'running') "
            "GROUP BY flow, state"
        )
        runs_rows = [(str(f), str(s), int(n)) for f, s, n in runs]
        # through the partial index runs_queued: the queue, not the history
        queued = conn.execute(
            "SELECT flow, COUNT(*), MIN(created_at) FROM runs WHERE state = 'queued' GROUP BY flow"
        )
        queued_rows = [(str(f), int(n), _age(oldest, now)) for f, n, oldest in queued]
        # through the index outbox_due(state, ...): delivered rows are never read
        outbox = conn.execute(
            "SELECT destination, state, COUNT(*) FROM outbox "
            "WHERE state IN ('held', 'pending', 'dead') GROUP BY destination, state"
        )
        outbox_rows = [(str(d), str(s), int(n)) for d, s, n in outbox]
        # through the partial index file_claims_unsettled
        claims = conn.execute(
            "SELECT flow, COUNT(*) FROM file_claims WHERE settled_at IS NULL GROUP BY flow"
        )
        claims_rows = [(str(f), int(n)) for f, n in claims]
    finally:
        conn.execute("COMMIT")
    return StoreGauges(runs_rows, queued_rows, outbox_rows, claims_rows)


def read_ended(conn: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """(flow, state, count) of the ended runs of the whole history.

    A scan of every run: NOT INDEXED reads the table in order, about 5x faster than through
    ``runs_by_flow`` (which looks each row up: 0.38 s against 0.08 s for 100,000 runs here).
    """
    found = conn.execute(
        "SELECT flow, state, COUNT(*) FROM runs NOT INDEXED "
        "WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY flow, state"
    )
    return [(str(f), str(s), int(n)) for f, s, n in found]


def _age(created_at: str | None, now: float) -> float:
    created = codec.parse_iso(created_at)
    return 0.0 if created is None else max(0.0, now - created.timestamp())
