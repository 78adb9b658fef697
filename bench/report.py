"""The bench's figures and how they are printed: a table for people, JSON for tools."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any


@dataclass
class Figure:
    key: str  # stable id for --json readers
    workload: str
    unit: str
    ours: float
    floor: float | None
    target: str
    ok: bool | None
    lower_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """Our cost over the floor's cost (for a rate: the floor's rate over ours)."""
        if self.floor is None or self.floor <= 0 or self.ours <= 0:
            return None  # a marginal within the noise (bench/cli.py) has no meaningful ratio
        return self.ours / self.floor if self.lower_is_better else self.floor / self.ours


def machine() -> dict[str, Any]:
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "aiosqlite": metadata.version("aiosqlite"),
        "anyio": metadata.version("anyio"),
    }


def _num(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:#.3g}"


def table(
    figures: Sequence[Figure],
    info: Mapping[str, Any],
    mode: str,
    notes: str,
    title: str = "sluiceway engine bench",
) -> str:
    head = ("workload", "ours", "floor", "ratio", "target", "ok?")
    rows = [
        (
            f.workload,
            f"{_num(f.ours)} {f.unit}",
            "-" if f.floor is None else f"{_num(f.floor)} {f.unit}",
            "-" if f.ratio is None else f"{f.ratio:.2f}x",
            f.target,
            "-" if f.ok is None else ("yes" if f.ok else "NO"),
        )
        for f in figures
    ]
    grid = (head, *rows)
    widths = [max(len(r[i]) for r in grid) for i in range(len(head))]
    heading = (
        f"{title} ({mode}): nproc {info['nproc']}, {info['python']}, "
        f"SQLite {info['sqlite']}, aiosqlite {info['aiosqlite']}, anyio {info['anyio']}"
    )
    lines = [
        heading,
        info["platform"],
        "",
        *("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in grid),
        "",
        "ratio = our cost / floor cost (for runs/s: floor rate / our rate); medians of repeats.",
        notes,
    ]
    return "\n".join(lines)


def to_json(
    figures: Sequence[Figure], info: Mapping[str, Any], mode: str, settings: Mapping[str, Any]
) -> str:
    doc = {
        "mode": mode,
        "machine": dict(info),
        "settings": dict(settings),
        "figures": [{**asdict(f), "ratio": f.ratio} for f in figures],
    }
    return json.dumps(doc, indent=2)
