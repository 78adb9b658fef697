"""Deciding when a watched file is complete, from what stats of it say: pure, no I/O, the
monotonic clock injected and the wall-clock time passed in.

A file is ready when its size and mtime have not changed for ``stable_for``. Its mtime is
its last write, so the window is counted from the mtime (on the wall clock) and checked by one
more stat when it ends; a file whose mtime is already that old, or whose inode changed after
its last write (a rename into the folder), is ready at once (:func:`scanning.moved_in`).
Each file has at most one timer in one heap, so the cost is O(log n) per change, not a
sleeping task per file.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from plugins.triggers.files.scanning import FileFacts, FileState, Stat, moved_in


@dataclass(slots=True)
class _Entry:
    size: int
    mtime_ns: int
    ready_at: float  # monotonic: when these facts will have been unchanged for stable_for
    ready: bool  # stable now: offered, or about to be
    offered: tuple[int, int] | None  # (size, mtime_ns) last handed over, kept across changes
    seen: float  # monotonic: when the newest stat that saw it was asked for
    due: float | None  # the time of its one timer in the heap, if it has one


class Stability:
    """The files a watch knows, each waiting for stability or ready.

    :param stable_for: seconds a file must stay unchanged
    :param clock: monotonic seconds (injected for tests)
    """

    def __init__(self, stable_for: float, clock: Callable[[], float]) -> None:
        self.stable_for = stable_for
        self._clock = clock
        self._entries: dict[str, _Entry] = {}  # by Stat.key
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._entries)

    def observe(
        self, seen: Stat, wall: float, *, taken: float, again: bool = False
    ) -> FileFacts | None:
        """Record one stat of a file (asked for at monotonic *taken*; *wall* is the wall-clock
        time now, epoch seconds); return its facts when it should be offered now: ready, and
        not offered with these facts yet (or *again*, for a rescan, which offers every ready
        file).

        Stats come from several worker threads and may land out of order: one asked for
        before the stat the file's entry is built on is older news, and is ignored (a newer
        change still shows at the next event or timer).
        """
        now = self._clock()
        entry = self._entries.get(seen.key)
        if entry is not None and taken < entry.seen:
            return None
        if entry is None or entry.size != seen.size or entry.mtime_ns != seen.mtime_ns:
            settled = moved_in(seen, self.stable_for, wall)
            # the mtime is the last change: unchanged since then (checked when the time comes)
            by_mtime = now + seen.mtime_ns / 1e9 + self.stable_for - wall
            ready_at = min(now + self.stable_for, by_mtime)
            # what was handed over is kept: coming back to those facts offers nothing
            due, offered = (entry.due, entry.offered) if entry is not None else (None, None)
            entry = _Entry(seen.size, seen.mtime_ns, ready_at, settled, offered, taken, due)
            self._entries[seen.key] = entry
        else:
            entry.seen = taken
            if not entry.ready and now >= entry.ready_at:
                entry.ready = True
        if entry.ready:
            if entry.offered == (seen.size, seen.mtime_ns) and not again:
                return None
            entry.offered = (seen.size, seen.mtime_ns)
            return FileFacts(seen.path, seen.size, seen.mtime_ns)
        if entry.due is None:
            entry.due = entry.ready_at
            heapq.heappush(self._heap, (entry.ready_at, seen.key))
        return None

    def next_due(self) -> float | None:
        """When the earliest timer ends (monotonic), or ``None`` without timers."""
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[str]:
        """The keys of the files whose timer ended by *now*: stat them again and
        :meth:`observe` them."""
        due: list[str] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, key = heapq.heappop(heap)
            entry = self._entries.get(key)
            if entry is None or entry.due != when:
                continue  # forgotten since, or a stale timer
            entry.due = None
            due.append(key)
        return due

    def forget(self, key: str) -> None:
        """The file is gone (deleted, moved away, vanished at a stat)."""
        self._entries.pop(key, None)

    def retain(self, present: Iterable[str], scanned_at: float) -> None:
        """After a full scan that started at *scanned_at* (monotonic): forget the files whose
        keys it did not see, unless a stat asked for after it started saw them (an event
        during the scan)."""
        keep = set(present)
        gone = [k for k, e in self._entries.items() if k not in keep and e.seen < scanned_at]
        for key in gone:
            del self._entries[key]

    def backlog(self, claimed: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        """(files waiting for stability, stable files whose content is not in *claimed*,
        a path -> (size, mtime_ns) of what was claimed): the files seen but not yet run."""
        waiting = ready = 0
        for key, e in self._entries.items():
            if not e.ready:
                waiting += 1
            elif claimed.get(key) != (e.size, e.mtime_ns):
                ready += 1
        return waiting, ready

    def states(self, wall: float) -> list[FileState]:
        """Every known file: ``ready``, or ``waiting`` with its wall-clock ``ready_at``."""
        now = self._clock()
        return [
            FileState(
                Path(key),
                "ready" if e.ready else "waiting",
                None if e.ready else f"unchanged for less than stable_for={self.stable_for:g}s",
                e.size,
                e.mtime_ns,
                None if e.ready else wall + e.ready_at - now,
            )
            for key, e in self._entries.items()
        ]
