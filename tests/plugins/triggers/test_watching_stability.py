"""When a file counts as complete, decided from stats alone: a fake monotonic clock and
made-up stats, no files."""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.triggers.files.scanning import FileFacts, Stat
from plugins.triggers.files.stability import Stability

WALL = 1_800_000_000.0  # wall-clock epoch seconds at clock 0
A = Path("/in/a.csv")
KA = str(A)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def stat(size: int, written: float, *, ctime: float | None = None, path: Path = A) -> Stat:
    """A stat of *path*, last written at clock time *written*."""
    mtime = int((WALL + written) * 1e9)
    ctime_ns = int((WALL + ctime) * 1e9) if ctime is not None else mtime
    return Stat(path, str(path), size, mtime, ctime_ns)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def observe(
    files: Stability, clock: Clock, seen: Stat, *, taken: float | None = None, again: bool = False
) -> FileFacts | None:
    """Observe *seen* as a stat asked for at *taken* (now by default)."""
    when = clock.now if taken is None else taken
    return files.observe(seen, WALL + clock.now, taken=when, again=again)


def test_a_file_is_ready_stable_for_after_its_last_write(clock: Clock) -> None:
    files = Stability(2.0, clock)
    assert observe(files, clock, stat(10, 0.0)) is None
    assert files.next_due() == 2.0
    clock.now = 1.0
    assert files.pop_due(clock.now) == []
    assert observe(files, clock, stat(20, 1.0)) is None  # it grew: the window starts again
    clock.now = 2.0
    assert files.pop_due(clock.now) == [KA]  # the first timer: look again
    assert observe(files, clock, stat(20, 1.0)) is None
    assert files.next_due() == 3.0
    clock.now = 3.0
    assert files.pop_due(clock.now) == [KA]
    assert observe(files, clock, stat(20, 1.0)) == FileFacts(A, 20, stat(20, 1.0).mtime_ns)
    assert observe(files, clock, stat(20, 1.0)) is None  # offered once
    assert observe(files, clock, stat(20, 1.0), again=True) is not None  # a rescan offers again
    assert files.next_due() is None


def test_the_window_counts_from_the_mtime_when_the_file_is_seen_late(clock: Clock) -> None:
    files = Stability(2.0, clock)
    clock.now = 1.5
    assert observe(files, clock, stat(10, 0.0)) is None
    assert files.next_due() == 2.0  # 2 s after the write, not after the first look


@pytest.mark.parametrize(
    "seen",
    [stat(10, -2.0), stat(10, -60.0), stat(10, -0.5, ctime=-0.1)],
    ids=["mtime-exactly-stable-for-ago", "mtime-long-ago", "renamed-in-after-its-write"],
)
def test_files_that_look_complete_are_ready_at_once(clock: Clock, seen: Stat) -> None:
    files = Stability(2.0, clock)
    assert observe(files, clock, seen) == FileFacts(A, 10, seen.mtime_ns)


def test_a_rewritten_file_is_offered_again(clock: Clock) -> None:
    files = Stability(2.0, clock)
    assert observe(files, clock, stat(10, -60.0)) is not None
    clock.now = 5.0
    assert observe(files, clock, stat(12, 5.0)) is None
    clock.now = 7.0
    assert files.pop_due(clock.now) == [KA]
    assert observe(files, clock, stat(12, 5.0)) == FileFacts(A, 12, stat(12, 5.0).mtime_ns)


def test_forgotten_files_have_no_timers_and_retain_keeps_what_events_saw(clock: Clock) -> None:
    files = Stability(2.0, clock)
    b, c = Path("/in/b.csv"), Path("/in/c.csv")
    for path in (A, b, c):
        observe(files, clock, stat(1, 0.0, path=path))
    files.forget(KA)
    clock.now = 1.0
    observe(files, clock, stat(1, 0.0, path=c))  # an event during the scan below
    files.retain([str(b)], scanned_at=0.5)  # the scan saw only b
    assert sorted(s.path.name for s in files.states(WALL)) == ["b.csv", "c.csv"]
    clock.now = 2.0
    assert files.pop_due(clock.now) == [str(b), str(c)]


def test_states_say_when_a_waiting_file_will_be_ready(clock: Clock) -> None:
    files = Stability(2.0, clock)
    observe(files, clock, stat(10, 0.0))
    observe(files, clock, stat(5, -60.0, path=Path("/in/old.csv")))
    clock.now = 0.5
    waiting, ready = files.states(WALL + 0.5)
    assert (waiting.state, waiting.ready_at, waiting.size) == ("waiting", WALL + 2.0, 10)
    assert (ready.state, ready.ready_at, ready.why) == ("ready", None, None)


def test_a_stale_stat_landing_late_is_ignored(clock: Clock) -> None:
    """Stats come from several worker threads: an older one may be observed after a newer."""
    files = Stability(2.0, clock)
    clock.now = 3.0
    complete, empty = stat(10, 0.5), stat(0, 0.0)
    assert observe(files, clock, complete, taken=2.9) == FileFacts(A, 10, complete.mtime_ns)
    assert observe(files, clock, empty, taken=2.8) is None  # asked for before: older news
    assert [s.size for s in files.states(WALL + 3.0)] == [10]
    assert observe(files, clock, complete, taken=3.0) is None  # and offered once
