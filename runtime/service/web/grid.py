"""A flow's grid, purely: runs (rows, newest first) x tasks (columns, in graph order), each
cell one state. A mapped task is one column; its cell summarises the instances: the most
relevant state among them (a failure before a success) and how many are done."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# most relevant first: what a person must see in a summary cell
RELEVANCE = (
    "failed",
    "upstream_failed",
    "running",
    "retrying",
    "queued",
    "pending",
    "cancelled",
    "skipped",
    "succeeded",
)
DONE = frozenset({"succeeded", "failed", "upstream_failed", "skipped", "cancelled"})


def most_relevant(states: Iterable[str]) -> str:
    """The state a summary of *states* shows (unknown states rank last)."""
    rank = {state: i for i, state in enumerate(RELEVANCE)}
    return min(states, key=lambda s: rank.get(s, len(RELEVANCE)), default="pending")


@dataclass(frozen=True, slots=True)
class Cell:
    """One run's state of one task (a mapped task: of its instances, summarised).

    :ivar text: what the cell shows beside its colour: ``7/10`` done instances of a mapped
        task, ``↻3`` when a task took 3 attempts, else empty
    :ivar title: the tooltip: the state, attempts, instances by state
    """

    task: str
    state: str
    text: str
    title: str
    instances: int
    done: int
    attempts: int


@dataclass(frozen=True, slots=True)
class GridRow:
    run: Mapping[str, Any]
    cells: list[Cell | None]  # None: the run has no such task (a task added later)


def columns(order: Sequence[str], cells: Iterable[Mapping[str, Any]]) -> list[str]:
    """The flow's tasks in graph order, then tasks that only old runs have (removed since),
    in the order they are first met."""
    out = dict.fromkeys(order)
    for item in cells:
        out.setdefault(item["name"])
    return list(out)


def _cell(task: str, items: Sequence[Mapping[str, Any]]) -> Cell:
    own = [i for i in items if i["own"]]
    instances = [i for i in items if not i["own"]]
    attempts = max((i["attempts"] or 0 for i in items), default=0)
    own_state = own[0]["state"] if own else None
    if not instances:
        state = own_state or "pending"
        text = f"↻{attempts}" if attempts > 1 else ""
        title = f"{task}: {state}" + (f", {attempts} attempts" if attempts > 1 else "")
        return Cell(task, state, text, title, 0, 0, attempts)
    total = sum(i["count"] for i in instances)
    done = sum(i["count"] for i in instances if i["state"] in DONE)
    summary = most_relevant(i["state"] for i in instances)
    # a mapped task that ended has its own outcome (its trigger rule over the instances)
    state = own_state if own_state in DONE else summary
    counts = ", ".join(
        f"{i['count']} {i['state']}"
        for i in sorted(
            instances, key=lambda i: RELEVANCE.index(i["state"]) if i["state"] in RELEVANCE else 99
        )
    )
    title = f"{task}: {state}, {done}/{total} instances done ({counts})"
    return Cell(task, state, f"{done}/{total}", title, total, done, attempts)


def build_grid(
    order: Sequence[str], runs: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]]
) -> tuple[list[str], list[GridRow]]:
    """The columns and rows of the grid of *runs* (newest first) from the folded task rows
    *cells* (:func:`runtime.store.dashboard.grid_cells`)."""
    cols = columns(order, cells)
    found: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
    for item in cells:
        found.setdefault((item["run_id"], item["name"]), []).append(item)
    rows = []
    for run in runs:
        row: list[Cell | None] = []
        for task in cols:
            items = found.get((run["id"], task))
            row.append(_cell(task, items) if items else None)
        rows.append(GridRow(run, row))
    return cols, rows
