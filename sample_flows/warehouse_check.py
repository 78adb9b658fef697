"""A scheduled flow: every minute, check the warehouse that ``etl`` loads and report on it.

Run it under the service and watch runs appear within a minute::

    make run                      # loads one day with etl, then starts the service
    .venv/bin/sluiceway runs      # in another terminal: warehouse_check runs every minute
    .venv/bin/sluiceway next warehouse_check -n 3

It shows ``cron()`` with a time zone, the catch-up policy (after downtime only the latest
missed minute runs), a flow SLA, ``Skip`` when there is nothing to check yet, and an
``any_failed`` handler that runs only when the check failed.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from runtime import Flow, Run, Skip, cron

WAREHOUSE = Path(__file__).resolve().parent / "data" / "warehouse.db"

check = Flow(
    "warehouse_check",
    triggers=[cron("* * * * *", tz="Europe/Amsterdam")],
    catchup="latest",
    sla="45s",  # a check that is not done 45 s after its minute is recorded as an SLA miss
    max_active_runs=1,
    description="every minute: row counts and freshness of the sample warehouse",
)


@check.task(retries=2, retry_delay="2s", retry_on=(sqlite3.OperationalError,), timeout="20s")
def counts(run: Run) -> dict[str, int]:
    """Rows per day in the warehouse; skipped until ``etl`` has loaded something."""
    if not WAREHOUSE.exists():
        raise Skip(f"{WAREHOUSE.name} does not exist yet: run `sluiceway run etl` first")
    with sqlite3.connect(f"file:{WAREHOUSE}?mode=ro", uri=True) as db:
        try:
            rows = db.execute(
                "SELECT day, COUNT(*) FROM daily_sales GROUP BY day ORDER BY day"
            ).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                raise Skip("the warehouse has no daily_sales table yet") from None
            raise
    by_day = {str(day): int(n) for day, n in rows}
    run.log.info("warehouse holds %d day(s): %s", len(by_day), by_day)
    return by_day


@check.task
def verdict(run: Run, counts: dict[str, int]) -> str:
    """Fail loudly when a loaded day has no rows (a half-finished load)."""
    empty = [day for day, n in counts.items() if n == 0]
    if empty:
        raise ValueError(f"days with no rows: {', '.join(empty)}")
    return f"{sum(counts.values())} rows over {len(counts)} day(s)"


@check.task(run_if="any_failed")
def report_failure(run: Run, verdict: str | None) -> None:
    """Runs only after a failure: the place for an alert (alerts come with the alerts issue)."""
    run.log.error("warehouse check failed for %s", run.logical_date.isoformat())
