"""
The seed's Extract -> Clean -> Transform -> Load -> Notify, on the orders CSV files shipped in
``sample_flows/data/orders/`` (one file per day, with the usual dirt: blank amounts, bad dates,
resent order ids, odd casing). The cleaned orders are summed per day, region and product and
loaded into a SQLite warehouse file, by default ``sample_flows/data/warehouse.db``.

Loading is idempotent: a run deletes the rows of its date (and region) and inserts the new
ones in one transaction, so running the same date twice leaves the same rows, never doubles.

To run it from the repository root::

    make run                                   # the same as the next line
    .venv/bin/sluiceway run etl --flows sample_flows
    .venv/bin/sluiceway run etl --flows sample_flows --param date=2026-01-03 --param region=eu

You should see one progress line per task on stderr, the tasks' own log lines indented under
them (how many rows each cleaning rule dropped, the revenue per region), and finally
``run N of etl succeeded``. Then look at the history and the warehouse::

    .venv/bin/sluiceway show N
    .venv/bin/sluiceway logs N --task clean
    sqlite3 sample_flows/data/warehouse.db 'SELECT * FROM daily_sales ORDER BY 1, 2, 3'

Params: ``date`` (the file ``orders-<date>.csv`` to load; empty means the run's logical
date), ``region`` (``all`` or one region; only that region's rows are replaced) and
``warehouse`` (a path to another SQLite file; empty means the default above).
"""

from __future__ import annotations

import csv
import sqlite3
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from runtime import Flow, Run

HERE = Path(__file__).resolve().parent
ORDERS = HERE / "data" / "orders"
DEFAULT_WAREHOUSE = HERE / "data" / "warehouse.db"

etl = Flow(
    "etl",
    params={"date": "2026-01-02", "region": "all", "warehouse": ""},
    max_active_runs=1,  # two loads of the same warehouse would only wait for each other
    description="orders CSV -> clean -> revenue per day/region/product -> SQLite warehouse",
)

Row = dict[str, Any]


def _day(run: Run, text: str) -> date:
    """The ``date`` param, or the run's logical date when it is empty."""
    if not text:
        return run.logical_date.date()
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"param date={text!r} is not a date like 2026-01-02") from None


@etl.task
def extract(run: Run, date: str) -> list[dict[str, str]]:
    """Read the day's orders file as it is: every value a string, nothing dropped."""
    day = _day(run, date)
    path = ORDERS / f"orders-{day.isoformat()}.csv"
    if not path.exists():
        have = ", ".join(sorted(p.stem.removeprefix("orders-") for p in ORDERS.glob("*.csv")))
        raise FileNotFoundError(f"no orders file for {day}: {path} (dates on hand: {have})")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [dict(row) for row in csv.DictReader(fh)]
    run.log.info("read %d rows from %s", len(rows), path.name)
    return rows


def _cents(text: str) -> int | None:
    """``"12.50"``, ``"$12.50"`` -> 1250; blank or unreadable -> None."""
    text = text.strip().lstrip("$").strip()
    if not text:
        return None
    try:
        return int((Decimal(text) * 100).to_integral_value())
    except InvalidOperation:
        return None


@etl.task
def clean(run: Run, extract: list[dict[str, str]], date: str, region: str) -> list[Row]:
    """Drop the rows that cannot be trusted and normalise the rest; log why rows went."""
    day = _day(run, date)
    dropped: Counter[str] = Counter()
    seen: set[str] = set()
    out: list[Row] = []
    for raw in extract:
        order_id = (raw.get("order_id") or "").strip()
        try:
            ordered = datetime.fromisoformat((raw.get("ordered_at") or "").strip())
        except ValueError:
            dropped["bad date"] += 1
            continue
        cents = _cents(raw.get("unit_price") or "")
        qty_text = (raw.get("quantity") or "").strip()
        row_region = (raw.get("region") or "").strip().lower()
        if not order_id:
            dropped["no order id"] += 1
        elif ordered.date() != day:
            dropped["other day"] += 1  # late rows are loaded with their own day, not this one
        elif cents is None:
            dropped["blank or bad amount"] += 1
        elif not qty_text.isdigit() or int(qty_text) < 1:
            dropped["bad quantity"] += 1
        elif not row_region:
            dropped["blank region"] += 1
        elif order_id in seen:
            dropped["duplicate order id"] += 1  # a resent order: the first one counts
        else:
            seen.add(order_id)
            out.append(
                {
                    "order_id": order_id,
                    "day": day.isoformat(),
                    "region": row_region,
                    "product": " ".join((raw.get("product") or "").split()).title(),
                    "quantity": int(qty_text),
                    "amount_cents": cents * int(qty_text),
                }
            )
    if region != "all":
        out = [row for row in out if row["region"] == region.strip().lower()]
    why = ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())) or "none"
    run.log.info("kept %d of %d rows (region=%s); dropped: %s", len(out), len(extract), region, why)
    # data-quality checks: an empty day fails the task; a dirty file only warns
    run.check("rows_kept", len(out) > 0, detail=f"{len(out)} of {len(extract)} rows")
    share = sum(dropped.values()) / len(extract) if extract else 0.0
    run.check("dropped_share", share <= 0.25, detail=f"{share:.0%} dropped", severity="warn")
    return out


@etl.check(after="clean")
def unique_order_ids(rows: list[Row]) -> tuple[bool, str]:
    """Checked on clean's result: every order id once (resent orders were dropped)."""
    ids = [row["order_id"] for row in rows]
    return len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate id(s)"


@etl.task
def transform(run: Run, clean: list[Row]) -> list[Row]:
    """Sum orders, units and revenue per day, region and product."""
    totals: dict[tuple[str, str, str], Row] = {}
    for row in clean:
        key = (row["day"], row["region"], row["product"])
        agg = totals.setdefault(key, {"orders": 0, "units": 0, "revenue_cents": 0})
        agg["orders"] += 1
        agg["units"] += row["quantity"]
        agg["revenue_cents"] += row["amount_cents"]
    out = [
        {"day": day, "region": reg, "product": product, **agg}
        for (day, reg, product), agg in sorted(totals.items())
    ]
    run.log.info("%d orders -> %d rows of daily_sales", len(clean), len(out))
    return out


DDL = """
CREATE TABLE IF NOT EXISTS daily_sales (
    day           TEXT NOT NULL,
    region        TEXT NOT NULL,
    product       TEXT NOT NULL,
    orders        INTEGER NOT NULL,
    units         INTEGER NOT NULL,
    revenue_cents INTEGER NOT NULL,
    run_id        INTEGER NOT NULL,
    PRIMARY KEY (day, region, product)
);
CREATE TABLE IF NOT EXISTS loads (
    day       TEXT NOT NULL,
    region    TEXT NOT NULL,
    run_key   TEXT NOT NULL,
    run_id    INTEGER NOT NULL,
    rows      INTEGER NOT NULL,
    loaded_at TEXT NOT NULL,
    PRIMARY KEY (day, region)
);
"""


def warehouse_path(warehouse: str) -> Path:
    """The warehouse file: the ``warehouse`` param, or ``data/warehouse.db`` beside this file."""
    return Path(warehouse).expanduser() if warehouse else DEFAULT_WAREHOUSE


@etl.task(retries=3, retry_delay="2s", retry_on=(sqlite3.OperationalError,))
def load(run: Run, transform: list[Row], date: str, region: str, warehouse: str) -> Row:
    """Replace the date's rows (only the region's, for one region) in one transaction."""
    day = _day(run, date).isoformat()
    path = warehouse_path(warehouse)
    path.parent.mkdir(parents=True, exist_ok=True)
    # autocommit mode, so the BEGIN/COMMIT below are the only transaction boundaries
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(DDL)
        # IMMEDIATE: take the write lock before the DELETE, so a reader never sees the day empty
        conn.execute("BEGIN IMMEDIATE")
        try:
            if region == "all":
                gone = conn.execute("DELETE FROM daily_sales WHERE day = ?", (day,)).rowcount
            else:
                gone = conn.execute(
                    "DELETE FROM daily_sales WHERE day = ? AND region = ?",
                    (day, region.strip().lower()),
                ).rowcount
            conn.executemany(
                "INSERT INTO daily_sales (day, region, product, orders, units, revenue_cents, "
                "run_id) VALUES (:day, :region, :product, :orders, :units, :revenue_cents, "
                ":run_id)",
                [{**row, "run_id": run.id} for row in transform],
            )
            conn.execute(
                "INSERT INTO loads (day, region, run_key, run_id, rows, loaded_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (day, region) DO UPDATE SET "
                "run_key = excluded.run_key, run_id = excluded.run_id, rows = excluded.rows, "
                "loaded_at = excluded.loaded_at",
                (day, region, run.key, run.id, len(transform), datetime.now(UTC).isoformat()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        total = conn.execute("SELECT COUNT(*) FROM daily_sales").fetchone()[0]
    finally:
        conn.close()
    run.log.info("replaced %d rows of %s with %d in %s", gone, day, len(transform), path.name)
    return {"day": day, "replaced": gone, "inserted": len(transform), "warehouse_rows": total}


@etl.task
async def notify(run: Run, transform: list[Row], load: Row) -> str:
    """Write the day's summary to the run's log (an alert plugin would post it)."""
    by_region: Counter[str] = Counter()
    for row in transform:
        by_region[row["region"]] += row["revenue_cents"]
    for reg, cents in sorted(by_region.items()):
        run.log.info("%-5s revenue %10.2f", reg, cents / 100)
    total = sum(by_region.values()) / 100
    summary = (
        f"{load['day']}: {sum(r['orders'] for r in transform)} orders, revenue {total:.2f}, "
        f"{load['inserted']} rows loaded ({load['replaced']} replaced); "
        f"warehouse holds {load['warehouse_rows']} rows"
    )
    run.log.info("%s", summary)
    return summary
