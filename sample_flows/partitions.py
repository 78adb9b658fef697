"""
Dynamic fan-out over the files of a folder, a branch on whether anything is new, and a report
that runs whatever happened (``run_if="all_done"``).

``scan`` lists the files of the inbox (by default ``sample_flows/data/orders/``) that the
ledger (by default ``sample_flows/data/partitions-ledger.json``) has not seen. ``route``
returns ``Branch("summarize")`` when there are new files and ``Branch("nothing_new")``
otherwise; the task not chosen ends ``skipped``. ``summarize`` runs once per new file
(``map="scan"``, at most 2 at once), ``record`` adds the files to the ledger, and ``report``
logs the outcome even when a file could not be read.

To run it from the repository root::

    .venv/bin/sluiceway run partitions --flows sample_flows
    .venv/bin/sluiceway run partitions --flows sample_flows      # again: nothing new
    rm sample_flows/data/partitions-ledger.json                  # to start over

The first run shows ``summarize[0]``, ``summarize[1]``, ... one per file, ``nothing_new``
skipped (not chosen by route) and the report with rows and revenue per file. The second run
finds nothing new: ``summarize`` and ``record`` end skipped and the report says so.
``sluiceway show N --json`` lists each instance as ``{"name": "summarize", "index": 0, ...}``.
"""

from __future__ import annotations

import csv
import json
import os
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from runtime import Branch, Flow, Run

HERE = Path(__file__).resolve().parent

partitions = Flow(
    "partitions",
    params={"inbox": "", "ledger": ""},
    max_active_runs=1,  # two runs would both see the same files as new
    description="one task per new file of a folder; skip when nothing is new; always report",
)


def _inbox(inbox: str) -> Path:
    return Path(inbox).expanduser() if inbox else HERE / "data" / "orders"


def _ledger(ledger: str) -> Path:
    return Path(ledger).expanduser() if ledger else HERE / "data" / "partitions-ledger.json"


def _seen(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


@partitions.task
def scan(run: Run, inbox: str, ledger: str) -> list[str]:
    """The inbox's CSV files that the ledger has not recorded yet, oldest name first."""
    folder = _inbox(inbox)
    if not folder.is_dir():
        raise FileNotFoundError(f"inbox {folder} is not a folder")
    seen = _seen(_ledger(ledger))
    files = sorted(str(p) for p in folder.glob("*.csv") if p.name not in seen)
    run.log.info("%d new file(s) in %s (%d already recorded)", len(files), folder, len(seen))
    return files


@partitions.task
def route(scan: list[str]) -> Branch:
    """Choose the way on: process the files, or take the 'nothing new' path."""
    return Branch("summarize") if scan else Branch("nothing_new")


@partitions.task(after=[route])
def nothing_new(run: Run) -> None:
    run.log.info("nothing new to process")


@partitions.task(map="scan", after=[route], max_concurrency=2, retries=1, retry_delay="0.5s")
def summarize(run: Run, scan: str) -> dict[str, Any]:
    """One instance per file (``scan`` is one path here): rows and revenue it holds."""
    rows, cents = 0, 0
    with open(scan, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            rows += 1
            try:
                price = Decimal((row.get("unit_price") or "").strip().lstrip("$"))
                cents += int(price * 100) * int(row.get("quantity") or "")
            except (InvalidOperation, ValueError):
                pass  # etl.py's clean step says why; a summary only counts what it can
    run.log.info("%s: %d rows", Path(scan).name, rows)
    return {"file": Path(scan).name, "rows": rows, "revenue": cents / 100}


@partitions.task
def record(run: Run, summarize: list[dict[str, Any]], ledger: str) -> int:
    """Add the processed files to the ledger (written whole, then renamed into place)."""
    path = _ledger(ledger)
    seen = _seen(path)
    for item in summarize:
        seen[item["file"]] = {"run_id": run.id, "rows": item["rows"]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(seen, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)  # a crash leaves the old ledger or the new one, never half of one
    return len(summarize)


@partitions.task(run_if="all_done", after=[nothing_new])
def report(
    run: Run, scan: list[str] | None, summarize: list[Any] | None, record: int | None
) -> str:
    """Runs whatever the upstream tasks ended in: after a failure too."""
    if scan is None:
        text = "scan failed: nothing was processed"  # a failed upstream passes None
    elif not scan:
        text = "nothing new"
    else:
        done = [s for s in summarize or [] if s is not None]
        lines = [f"{s['file']}: {s['rows']} rows, revenue {s['revenue']:.2f}" for s in done]
        for line in lines:
            run.log.info("%s", line)
        recorded = "recorded" if record is not None else "NOT recorded"
        text = f"{len(done)} of {len(scan)} new file(s) summarized and {recorded}"
    run.log.info("%s", text)
    return text
