"""A file-triggered flow: every orders CSV dropped into ``sample_flows/data/inbox/`` runs once.

With the service running (``make run``), in another terminal::

    cp sample_flows/data/orders/orders-2026-01-03.csv sample_flows/data/inbox/
    .venv/bin/sluiceway files intake --flows sample_flows    # what the trigger sees
    .venv/bin/sluiceway runs --flow intake

The file is claimed once its size and mtime have been still for a second (a file moved in
with ``mv`` is taken at once), runs, and is then moved to ``data/processed/`` (or
``data/rejected/`` when the run fails). Copying the same content again does nothing new; a
changed file runs again. ``sluiceway run intake --file PATH`` runs it by hand on one file.
Hidden and temporary names (``.x.csv``, ``x.csv.part``) are ignored: write under such a
name and rename when done.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from runtime import Flow, Run, Skip, files, on_flow

intake = Flow(
    "intake",
    triggers=[
        files(
            "data/inbox",
            pattern="orders-*.csv",
            stable_for="1s",
            on_success="move:data/processed",
            on_failure="move:data/rejected",
        )
    ],
    description="each orders CSV dropped into data/inbox: rows per region, then moved",
)


@intake.task
def read(run: Run) -> list[dict[str, str]]:
    """The dropped file's rows (``run.trigger.path``: absolute)."""
    if run.trigger.kind != "file":
        raise Skip("this flow reads the file that triggered it: drop one into data/inbox/")
    path = Path(run.trigger.path)
    with path.open(newline="", encoding="utf-8") as fh:
        rows = [dict(row) for row in csv.DictReader(fh)]
    run.log.info("%s: %d rows, %d bytes", path.name, len(rows), run.trigger.size)
    run.check("has_rows", len(rows) > 0, detail=f"{len(rows)} rows in {path.name}")
    return rows


@intake.task
def by_region(run: Run, read: list[dict[str, str]]) -> dict[str, int]:
    """Orders per region, as the file has them."""
    counts = Counter((row.get("region") or "").strip().lower() or "(blank)" for row in read)
    run.log.info("orders per region: %s", dict(sorted(counts.items())))
    return dict(counts)


report = Flow(
    "intake_report",
    triggers=[on_flow("intake", state=["succeeded", "failed"])],
    description="after every intake run: one line on what it did",
)


@report.task
def summary(run: Run) -> str:
    """``run.trigger`` names the upstream run: its id, state and logical date."""
    upstream = run.trigger
    line = f"intake run {upstream.run_id} {upstream.state} (logical date {upstream.logical_date})"
    run.log.info("%s", line)
    return line
