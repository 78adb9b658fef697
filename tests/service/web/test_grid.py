"""The grid's cells as a unit: a mapped task's summary cell (most relevant state, n/m done),
retries on a plain cell, and columns for tasks only old runs have."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.service.web.grid import build_grid, most_relevant


def row(run_id: int, name: str, state: str, *, own: bool = True, count: int = 1,
        attempts: int = 1) -> dict[str, Any]:  # fmt: skip
    return {"run_id": run_id, "name": name, "own": own, "state": state, "count": count,
            "attempts": attempts}  # fmt: skip


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        (["succeeded", "failed", "running"], "failed"),
        (["succeeded", "running", "pending"], "running"),
        (["succeeded", "skipped"], "skipped"),
        (["succeeded"], "succeeded"),
        ([], "pending"),
        (["weird", "succeeded"], "succeeded"),
    ],
    ids=[
        "failure-first",
        "running-before-pending",
        "skipped-before-success",
        "one",
        "none",
        "unknown-last",
    ],
)
def test_most_relevant(states: list[str], expected: str) -> None:
    assert most_relevant(states) == expected


def test_mapped_cells_summarise_their_instances() -> None:
    runs = [{"id": 2}, {"id": 1}]
    cells = [
        # run 2: load still running, 1 of 4 instances failed, 2 succeeded, 1 running
        row(2, "load", "running"),
        row(2, "load", "failed", own=False),
        row(2, "load", "succeeded", own=False, count=2),
        row(2, "load", "running", own=False),
        # run 1: load ended succeeded (its rule allowed a failed instance); extract retried
        row(1, "extract", "succeeded", attempts=3),
        row(1, "load", "succeeded"),
        row(1, "load", "succeeded", own=False, count=9, attempts=2),
        row(1, "load", "failed", own=False),
        row(1, "gone", "succeeded"),
    ]
    columns, rows = build_grid(["extract", "load"], runs, cells)
    assert columns == ["extract", "load", "gone"]  # a removed task keeps its column
    newest, oldest = rows
    assert newest.cells[0] is None  # extract has no row in run 2
    load2 = newest.cells[1]
    assert load2 is not None
    assert (load2.state, load2.text, load2.done, load2.instances) == ("failed", "3/4", 3, 4)
    assert "1 failed, 1 running, 2 succeeded" in load2.title
    extract1, load1, gone1 = oldest.cells
    assert extract1 is not None
    assert (extract1.state, extract1.text) == ("succeeded", "↻3")
    # an ended mapped task shows its own outcome, not its worst instance
    assert load1 is not None
    assert (load1.state, load1.text) == ("succeeded", "10/10")
    assert gone1 is not None
    assert gone1.state == "succeeded"
