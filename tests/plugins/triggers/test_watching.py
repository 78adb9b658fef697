"""The folder watcher on real temp folders with real inotify events: what it hands over, when,
and what it ignores."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from plugins.triggers.files import watching
from plugins.triggers.files.watching import FolderWatch
from tests.plugins.triggers.watchkit import Recorder, make_spec, until, write
from tests.plugins.triggers.watchkit import watching as running

LONG = 600.0  # a stable_for or rescan no test waits for: what happens before it is the point


async def test_files_there_before_start_are_offered_before_started(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    write(inbox / "old.csv", age=3600)
    write(inbox / "sub" / "deep.csv", age=3600)  # recursive=False: not for this trigger
    write(inbox / "fresh.csv")  # written just now: waits for stability
    rec = Recorder()
    watch = FolderWatch(make_spec(inbox, stable_for=LONG), on_ready=rec.on_ready, report=rec.report)
    async with running(watch):
        assert rec.names() == ["old.csv"]  # already, at started()
        states = {s.path.name: s.state for s in watch.states()}
        assert states == {"old.csv": "ready", "fresh.csv": "waiting"}


async def test_many_files_at_start_come_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watching, "CHUNK", 10)
    for i in range(25):
        write(tmp_path / f"f{i:04}.csv", age=3600)
    rec = Recorder()
    watch = FolderWatch(
        make_spec(tmp_path, stable_for=LONG), on_ready=rec.on_ready, report=rec.report
    )
    async with running(watch):
        assert len(rec.distinct()) == 25
        assert [len(c) for c in rec.calls] == [10, 10, 5]


async def test_a_file_is_offered_once_stable_and_once_only(tmp_path: Path) -> None:
    rec = Recorder()
    spec = make_spec(tmp_path, stable_for="300ms", pattern="*.csv")
    async with running(FolderWatch(spec, on_ready=rec.on_ready, report=rec.report)) as watch:
        path = write(tmp_path / "a.csv", "1,2,3\n")
        await until(lambda: rec.offered, "a.csv offered")
        # more events and timers come and go: still one offer
        write(tmp_path / "other.csv", age=3600)
        await until(lambda: len(rec.offered) == 2, "other.csv offered")
        assert sorted((f.path.name, f.size) for f in rec.offered) == [
            ("a.csv", 6),
            ("other.csv", 8),
        ]
        assert rec.offered[0].path == path
        assert path.is_absolute()
        assert rec.offered[0].mtime_ns == path.stat().st_mtime_ns
        assert {s.state for s in watch.states()} == {"ready"}


@pytest.mark.slow
async def test_a_slow_writer_is_offered_once_at_full_size_after_it_stops(tmp_path: Path) -> None:
    rec = Recorder()
    spec = make_spec(tmp_path, stable_for="1s")
    async with running(FolderWatch(spec, on_ready=rec.on_ready, report=rec.report)):
        target = tmp_path / "slow.csv"
        with target.open("w") as f:
            for i in range(30):  # 3 s of appends, 100 ms apart
                f.write(f"{i},row\n")
                f.flush()
                await anyio.sleep(0.1)
        stopped = time.monotonic()
        size = target.stat().st_size
        assert rec.offered == []  # nothing while it was being written
        await until(lambda: rec.offered, "slow.csv offered")
        assert time.monotonic() - stopped >= 0.5  # not before it stopped changing
        await anyio.sleep(1.5)  # a second stability window: no second offer comes
    assert [(f.path.name, f.size) for f in rec.offered] == [("slow.csv", size)]


async def test_a_file_renamed_in_is_offered_at_once(tmp_path: Path) -> None:
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    staging.mkdir()
    rec = Recorder()
    spec = make_spec(inbox, stable_for=LONG)  # stability would take 10 minutes
    async with running(FolderWatch(spec, on_ready=rec.on_ready, report=rec.report)) as watch:
        write(inbox / "written-here.csv")  # the control: a plain new file waits
        # written a while ago elsewhere, then moved in
        os.rename(write(staging / "old.csv", age=60), inbox / "old.csv")
        await until(lambda: rec.names() == ["old.csv"], "old.csv offered")
        # written just now, renamed in once the clock moved on: its ctime is after its mtime
        fresh = write(staging / "fresh.part")
        await until(lambda: time.time_ns() > fresh.stat().st_mtime_ns + 50_000_000, "50 ms")
        os.rename(fresh, inbox / "fresh.csv")
        await until(lambda: "fresh.csv" in rec.names(), "fresh.csv offered")
        assert rec.names() == ["fresh.csv", "old.csv"]
        waiting = [s for s in watch.states() if s.state == "waiting"]
        assert [s.path.name for s in waiting] == ["written-here.csv"]


async def test_hidden_temporary_and_unmatched_names_are_ignored(tmp_path: Path) -> None:
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "dir.csv").mkdir()  # a folder named like a file
    rec = Recorder()
    spec = make_spec(tmp_path, pattern="*.csv", ignore=["skip_*"], recursive=True, stable_for=0)
    watch = FolderWatch(spec, on_ready=rec.on_ready, report=rec.report, rescan=0.2)
    async with running(watch):
        for name in [".x.csv", "a.tmp", "b.part", "c.crdownload", "d.swp", "e.txt", "skip_f.csv"]:
            write(tmp_path / name)
        write(tmp_path / ".hidden" / "g.csv")
        write(tmp_path / "b.csv.part").rename(tmp_path / "b.csv")  # the usual way to drop one
        write(tmp_path / "sub" / "deep.csv")
        await until(lambda: len(rec.offered) >= 6, "b.csv and sub/deep.csv, and two rescans")
        assert set(rec.names()) == {"b.csv", "deep.csv"}
        assert sorted(s.path.name for s in watch.states()) == ["b.csv", "deep.csv"]


async def test_the_same_path_rewritten_is_offered_again(tmp_path: Path) -> None:
    rec = Recorder()
    spec = make_spec(tmp_path, stable_for="100ms")
    async with running(FolderWatch(spec, on_ready=rec.on_ready, report=rec.report)):
        path = write(tmp_path / "daily.csv", "v1\n")
        await until(lambda: rec.offered, "the first version offered")
        write(path, "version 2\n")
        await until(lambda: len(rec.offered) == 2, "the second version offered")
    assert [f.size for f in rec.offered] == [3, 10]
    assert rec.offered[0].path == rec.offered[1].path


async def test_a_periodic_rescan_offers_every_complete_file_again(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", age=3600)
    rec = Recorder()
    spec = make_spec(tmp_path, stable_for=LONG)
    watch = FolderWatch(spec, on_ready=rec.on_ready, report=rec.report, rescan=0.2)
    async with running(watch):
        await until(lambda: len(rec.offered) >= 3, "a.csv offered by two rescans")
    assert {(f.path.name, f.size) for f in rec.offered} == {("a.csv", 8)}


async def test_a_batch_window_groups_the_files_ready_within_it(tmp_path: Path) -> None:
    write(tmp_path / "before.csv", age=3600)
    rec = Recorder()
    spec = make_spec(tmp_path, stable_for=LONG, batch="500ms")
    async with running(FolderWatch(spec, on_ready=rec.on_ready, report=rec.report)):
        assert [[f.path.name for f in c] for c in rec.calls] == [["before.csv"]]
        for i in range(5):
            write(tmp_path / f"b{i}.csv", age=60)
        await until(lambda: len(rec.calls) == 2, "one batch")
        write(tmp_path / "later.csv", age=60)
        await until(lambda: len(rec.calls) == 3, "the next batch")
    assert [sorted(f.path.name for f in c) for c in rec.calls[1:]] == [
        [f"b{i}.csv" for i in range(5)],
        ["later.csv"],
    ]


async def test_a_vanished_file_is_forgotten(tmp_path: Path) -> None:
    rec = Recorder()
    spec = make_spec(tmp_path, stable_for=LONG)
    async with running(FolderWatch(spec, on_ready=rec.on_ready, report=rec.report)) as watch:
        path = write(tmp_path / "gone.csv")
        await until(lambda: watch.states(), "gone.csv seen")
        path.unlink()
        write(tmp_path / "kept.csv", age=60)
        await until(lambda: rec.offered, "kept.csv offered")
        await until(lambda: len(watch.states()) == 1, "gone.csv forgotten")
    assert rec.names() == ["kept.csv"]
