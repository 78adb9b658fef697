"""Log search bench: what the full-text index costs per stored log line, the latency of
``search_logs`` (what ``GET /api/logs/search`` runs) over a generated history, and how long
one retention chunk holds the writer (prints figures, never asserts).

    .venv/bin/python bench/log_search.py                 # 10,000,000 lines: build once, minutes
    .venv/bin/python bench/log_search.py --lines 1000000 # quicker
    .venv/bin/python bench/log_search.py --quick         # 200,000 lines, seconds

The generated history is kept (``--db``, default in the temp folder, one file per size) and
reused by the next run. Lines are 100 per run, 50 runs per flow name (20 flows), messages
from a small vocabulary with numbers, 3% warnings, 1% errors, and a rare phrase in one line
of 100,000: like an ETL service's logs, where a few words are in almost every line.
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from runtime.store import migrations, schema
from runtime.store.logsearch import LogSearch, fts_query, min_level, search_logs
from runtime.store.prune import MAX_CHUNK, TARGET, _delete_chunk

LINES_PER_RUN = 100
# the migration that adds the index (numbers change when migrations are merged in order)
FTS = next(n for n, script in enumerate(migrations.MIGRATIONS) if "logs_fts" in script)
FLOWS = [f"flow_{n:02d}" for n in range(20)]
TABLES = ["orders", "customers", "invoices", "shipments", "payments", "events", "stock"]
VERBS = ["loaded", "extracted", "transformed", "merged", "deduplicated", "validated", "wrote"]
HOSTS = ["db1.example.com", "db2.example.com", "warehouse.internal", "s3://lake/raw"]
ERRORS = [
    "connection refused by {host}",
    "timeout after {n} ms talking to {host}",
    "constraint violation in {table}: duplicate key {n}",
]
RARE = "checksum mismatch in partition {n}"


def message(rng: random.Random, n: int) -> tuple[str, str]:
    roll = rng.random()
    host, table = rng.choice(HOSTS), rng.choice(TABLES)
    if n % 100_000 == 77:
        return "ERROR", RARE.format(n=n)
    if roll < 0.01:
        return "ERROR", rng.choice(ERRORS).format(host=host, table=table, n=rng.randrange(10**6))
    if roll < 0.04:
        return "WARNING", f"slow query on {table}: {rng.randrange(1000, 60000)} ms, retrying"
    verb = rng.choice(VERBS)
    rows = rng.randrange(1, 10**6)
    return "INFO", f"{verb} {rows} rows from {table} at {host} in {rng.randrange(1, 9999)} ms"


def lines(count: int, first_run: int = 1) -> Iterator[tuple[object, ...]]:
    rng = random.Random(13)
    for n in range(count):
        level, text = message(rng, n)
        run = first_run + n // LINES_PER_RUN
        stamp = f"2026-11-{1 + (n * 29) // max(count, 1):02d}T08:00:00.{n % 1000000:06d}Z"
        yield (run, "load", -1, 1, stamp, level, text)


def migrate(conn: sqlite3.Connection, upto: int) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for script in migrations.MIGRATIONS[:upto]:
        conn.executescript(script)


def add_runs(conn: sqlite3.Connection, count: int) -> None:
    runs = (count + LINES_PER_RUN - 1) // LINES_PER_RUN
    conn.executemany(
        "INSERT INTO runs (id, flow, state, logical_date, created_at, ended_at) "
        "VALUES (?, ?, 'succeeded', '2026-11-01T00:00:00Z', '2026-11-01T00:00:00Z', "
        "'2026-11-01T00:05:00Z')",
        ((r, FLOWS[(r // 50) % len(FLOWS)]) for r in range(1, runs + 1)),
    )


def insert_cost(path: Path, upto: int, count: int, batch: int) -> float:
    """Microseconds per line, written as the store's writer does: batch by batch, one
    executemany and one commit (one fsync) each."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, upto)
    add_runs(conn, count)
    rows = list(lines(count))
    index = schema.INDEX_LOGS if upto > FTS else ()
    started = time.perf_counter()
    for at in range(0, count, batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(schema.INSERT_LOG, rows[at : at + batch])
        for sql in index:  # as runtime/store/batch.py writes a batch
            conn.execute(sql)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return elapsed / count * 1e6


def build(path: Path, count: int) -> None:
    print(f"building {path} with {count:,} lines (kept for the next run) ...", flush=True)
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, len(migrations.MIGRATIONS))
    conn.execute("PRAGMA synchronous=OFF")  # a generated file: a crash just means build again
    add_runs(conn, count)
    source = lines(count)
    while True:
        chunk = [row for _, row in zip(range(100_000), source, strict=False)]
        if not chunk:
            break
        conn.execute("BEGIN")
        conn.executemany(schema.INSERT_LOG, chunk)
        for sql in schema.INDEX_LOGS:
            conn.execute(sql)
        conn.execute("COMMIT")
    conn.execute("INSERT INTO logs_fts (logs_fts) VALUES ('optimize')")
    conn.close()
    print(f"  built in {time.perf_counter() - started:.0f}s", flush=True)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    times = []
    result: object = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return statistics.median(times), p99, result


def searches(count: int) -> list[tuple[str, LogSearch]]:
    runs = count // LINES_PER_RUN
    return [
        ("common word", LogSearch(fts_query("rows"))),
        ("two words", LogSearch(fts_query("connection refused"))),
        ("phrase", LogSearch(fts_query('"timeout after"'))),
        ("prefix", LogSearch(fts_query("dedup*"))),
        ("rare phrase", LogSearch(fts_query('"checksum mismatch"'))),
        ("no match", LogSearch(fts_query("zyzzyva"))),
        ("common + flow", LogSearch(fts_query("rows"), flow="flow_07")),
        ("common + level>=ERROR", LogSearch(fts_query("db1"), levels=min_level("error"))),
        ("rare flow + level + word", LogSearch(fts_query("orders"), flow="flow_03",
                                               levels=min_level("error"))),
        ("in one run", LogSearch(fts_query("rows"), run=runs // 2)),
        ("page 50 deep (cursor)", LogSearch(fts_query("rows"), before=count // 3)),
        ("since/until", LogSearch(fts_query("slow"), since="2026-11-10T00:00:00Z",
                                  until="2026-11-11T00:00:00Z")),
    ]  # fmt: skip


def bench_search(path: Path, count: int, repeat: int) -> None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    print(f"\nsearch_logs over {count:,} lines, limit 50, {repeat} times each (ms)")
    print(f"  {'query':<28} {'p50':>8} {'p99':>8}  hits  more")
    worst = 0.0
    for name, search in searches(count):
        p50, p99, found = timed(lambda s=search: search_logs(conn, s), repeat)  # type: ignore[misc]
        assert isinstance(found, dict)
        worst = max(worst, p99)
        more = "yes" if found["next_cursor"] else "no"
        print(f"  {name:<28} {p50:8.1f} {p99:8.1f}  {len(found['hits']):>4}  {more}")
    print(f"  worst p99: {worst:.1f} ms (target 200 ms)")
    conn.close()


def bench_prune(path: Path, count: int) -> None:
    """Retention chunks (runs of 100 lines) deleted in one transaction each, rolled back, so
    the generated file stays whole: how long a chunk holds the writer, per run."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    runs = count // LINES_PER_RUN
    print(
        f"\nretention: a chunk deleted in one transaction (rolled back), target {TARGET * 1000:.0f} ms"
    )
    for size in (10, 50, 200):
        times = []
        for start in (1, runs // 3, runs // 2):
            ids = list(range(start, min(start + size, runs + 1)))
            conn.execute("BEGIN IMMEDIATE")
            began = time.perf_counter()
            done = _delete_chunk(conn, ids, "2027-01-01T00:00:00Z")
            times.append((time.perf_counter() - began) * 1000)
            conn.execute("ROLLBACK")
        took = statistics.median(times)
        print(f"  {size:>4} runs ({done.logs:,} lines): {took:6.1f} ms, {took / size:.2f} ms/run")
    print(f"  (chunks are sized from the last one's time, 1 to {MAX_CHUNK} runs)")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="200,000 lines")
    parser.add_argument("--repeat", type=int, default=100)
    parser.add_argument("--db", type=Path, default=None)
    args = parser.parse_args()
    count = 200_000 if args.quick else args.lines
    tmp = Path(tempfile.gettempdir())
    with tempfile.TemporaryDirectory() as scratch:
        before = insert_cost(Path(scratch) / "a.db", FTS, 200_000, 500)
        after = insert_cost(Path(scratch) / "b.db", len(migrations.MIGRATIONS), 200_000, 500)
    print("write cost per log line, 200,000 lines in batches of 500 (one fsync each):")
    print(f"  without the index {before:.2f} us, with it {after:.2f} us ({after / before:.1f}x)")
    path = args.db or tmp / f"sluiceway-bench-logs-{count}.db"
    if not path.exists():
        build(path, count)
    bench_search(path, count, args.repeat)
    bench_prune(path, count)


if __name__ == "__main__":
    main()
