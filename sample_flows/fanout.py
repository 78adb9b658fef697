"""
Fan-out, fan-in, a pool and retries, on the same orders files as ``etl.py``.

``orders`` reads every day's file once; three region tasks fan out from it and each sums its
region's revenue. They take a slot of the ``warehouse`` pool, which ``sluiceway.toml`` sizes
to 2 (``[pools] warehouse = 2``), so only two of them run at once however many are ready.
``combine`` fans in: it starts the moment the last region task ends. ``publish`` is a flaky
step: its first ``flaky_failures`` attempts raise ConnectionError, and ``retries=3`` with
exponential backoff gets it through.

To run it from the repository root (the pool is sized in ./sluiceway.toml)::

    .venv/bin/sluiceway run fanout --flows sample_flows
    .venv/bin/sluiceway run fanout --flows sample_flows --param flaky_failures=5   # fails

You should see two region tasks ``running`` together while the third waits for a pool slot,
then ``combine``, then ``publish`` failing once with ``retrying in 0.2s`` before it
succeeds; ``sluiceway show N`` lists publish with 2 attempts.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

import anyio

from runtime import Flow, Run

ORDERS = Path(__file__).resolve().parent / "data" / "orders"

fanout = Flow(
    "fanout",
    params={"work_seconds": 0.3, "flaky_failures": 1},
    description="per-region revenue in parallel under the warehouse pool, then a flaky publish",
)


@fanout.task
def orders(run: Run) -> list[dict[str, str]]:
    """Every order line of every day's file, as read."""
    rows: list[dict[str, str]] = []
    for path in sorted(ORDERS.glob("orders-*.csv")):
        with path.open(newline="", encoding="utf-8") as fh:
            rows.extend(csv.DictReader(fh))
    run.log.info("read %d order lines", len(rows))
    return rows


async def _region_revenue(
    run: Run, rows: list[dict[str, str]], region: str, work_seconds: float
) -> dict[str, float]:
    """Revenue per day of one region; rows with unreadable values are left out."""
    per_day: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if (row.get("region") or "").strip().lower() != region:
            continue
        try:
            day = date.fromisoformat((row.get("ordered_at") or "")[:10]).isoformat()
            price = Decimal((row.get("unit_price") or "").strip().lstrip("$"))
            qty = int(row.get("quantity") or "")
        except (InvalidOperation, ValueError):
            continue
        per_day[day] += price * qty
    # stands in for a query that holds a warehouse connection for a while
    await anyio.sleep(work_seconds)
    run.log.info("%s: %d days", region, len(per_day))
    return {day: float(total) for day, total in sorted(per_day.items())}


@fanout.task(pool="warehouse")
async def region_eu(
    run: Run, orders: list[dict[str, str]], work_seconds: float
) -> dict[str, float]:
    return await _region_revenue(run, orders, "eu", work_seconds)


@fanout.task(pool="warehouse")
async def region_us(
    run: Run, orders: list[dict[str, str]], work_seconds: float
) -> dict[str, float]:
    return await _region_revenue(run, orders, "us", work_seconds)


@fanout.task(pool="warehouse")
async def region_apac(
    run: Run, orders: list[dict[str, str]], work_seconds: float
) -> dict[str, float]:
    return await _region_revenue(run, orders, "apac", work_seconds)


@fanout.task
def combine(
    run: Run,
    region_eu: dict[str, float],
    region_us: dict[str, float],
    region_apac: dict[str, float],
) -> dict[str, float]:
    """Fan-in: total revenue per region over all days."""
    totals = {
        "eu": round(sum(region_eu.values()), 2),
        "us": round(sum(region_us.values()), 2),
        "apac": round(sum(region_apac.values()), 2),
    }
    run.log.info("totals: %s", totals)
    return totals


@fanout.task(retries=3, retry_delay="0.2s", backoff=2.0, retry_on=(ConnectionError,))
async def publish(run: Run, combine: dict[str, float], flaky_failures: int) -> str:
    """A flaky step: the first ``flaky_failures`` attempts fail as a dropped connection would."""
    if run.attempt <= flaky_failures:
        raise ConnectionError(f"report endpoint dropped the connection (attempt {run.attempt})")
    best = max(combine, key=combine.__getitem__)
    run.log.info("published on attempt %d; best region %s", run.attempt, best)
    return best
