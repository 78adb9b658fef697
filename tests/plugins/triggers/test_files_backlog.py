"""The files source's backlog for /metrics, from what the stability tracker knows and what the
claimer claimed: files still being written, and complete files not claimed yet."""

from __future__ import annotations

from pathlib import Path

from plugins.triggers.files.scanning import Stat
from plugins.triggers.files.stability import Stability

WALL = 1_800_000_000.0


def stat(name: str, size: int, written: float) -> Stat:
    path = Path("/in") / name
    mtime = int((WALL + written) * 1e9)
    return Stat(path, str(path), size, mtime, mtime)


def test_backlog_counts_stabilizing_and_unclaimed_files() -> None:
    files = Stability(10.0, lambda: 0.0)
    done, old, fresh = stat("done.csv", 5, -60.0), stat("old.csv", 7, -60.0), stat("new.csv", 1, 0)
    for seen in (done, old, fresh):
        files.observe(seen, WALL, taken=0.0)
    assert files.backlog({}) == (1, 2)
    claimed = {done.key: (done.size, done.mtime_ns)}
    assert files.backlog(claimed) == (1, 1)
    # old.csv was claimed with other content: this content is not claimed yet
    assert files.backlog({**claimed, old.key: (old.size + 1, old.mtime_ns)}) == (1, 1)
    files.forget(fresh.key)
    assert files.backlog(claimed) == (0, 1)
