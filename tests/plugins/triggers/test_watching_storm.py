"""A burst of files dropped at once: every one is offered, none twice, in chunks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from plugins.triggers.files import scanning, watching
from plugins.triggers.files.scanning import Stat
from plugins.triggers.files.spec import FilesSpec
from plugins.triggers.files.watching import CHUNK, FileFacts, FolderWatch
from tests.plugins.triggers.watchkit import Recorder, make_spec, until, write
from tests.plugins.triggers.watchkit import watching as running


def _drop(folder: Path, count: int) -> None:
    for i in range(count):
        write(folder / f"part-{i:05}.csv", f"{i}\n")
        write(folder / f"part-{i:05}.tmp")  # the usual noise beside them


@pytest.mark.slow
async def test_a_burst_of_2000_files_loses_none_and_offers_none_twice(tmp_path: Path) -> None:
    rec = Recorder()
    spec = make_spec(tmp_path, pattern="*.csv", stable_for="200ms")
    watch = FolderWatch(spec, on_ready=rec.on_ready, report=rec.report, rescan=3600)
    async with running(watch):
        await anyio.to_thread.run_sync(_drop, tmp_path, 2000)
        await until(lambda: len(rec.distinct()) >= 2000, "2,000 files offered")
    facts = [(f.path, f.size, f.mtime_ns) for f in rec.offered]
    assert len(facts) == len(set(facts)) == 2000  # zero lost, zero twice
    assert all(len(call) <= CHUNK for call in rec.calls)


async def test_a_busy_claimer_holds_files_back_and_then_gets_them_together(
    tmp_path: Path,
) -> None:
    rec = Recorder()
    busy, release = anyio.Event(), anyio.Event()

    async def claimer(files: list[FileFacts]) -> None:
        await rec.on_ready(files)
        if len(rec.calls) == 1:  # the claimer is busy committing its first files
            busy.set()
            await release.wait()

    watch = FolderWatch(make_spec(tmp_path, stable_for=600), on_ready=claimer, report=rec.report)
    async with running(watch):
        write(tmp_path / "a.csv", age=60)
        await busy.wait()
        for i in range(50):
            write(tmp_path / f"b{i}.csv", age=60)
        await until(lambda: len(watch.states()) == 51, "the files seen while the claimer is busy")
        assert len(rec.calls) == 1  # awaited: no second call while the first runs
        release.set()
        await until(lambda: len(rec.distinct()) == 51, "the waiting files offered")
    assert rec.calls[0] == [
        FileFacts(tmp_path / "a.csv", 8, (tmp_path / "a.csv").stat().st_mtime_ns)
    ]
    assert len(rec.calls) == 2  # the 50 waited as one chunk, not 50 calls


async def test_files_whose_events_were_dropped_are_found_by_a_scan_after_a_burst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """inotify drops events silently when its queue overflows; a burst brings a scan soon."""
    real = scanning.look_at_changes

    def lossy(spec: FilesSpec, changes: Any, deleted: int) -> tuple[list[Stat], list[str]]:
        found, gone = real(spec, changes, deleted)
        return [s for s in found if not s.path.name.startswith("lost")], gone

    monkeypatch.setattr(watching, "look_at_changes", lossy)
    monkeypatch.setattr(watching, "STORM", 1)  # every group of changes counts as a burst
    rec = Recorder()
    spec = make_spec(tmp_path, stable_for=600)
    watch = FolderWatch(spec, on_ready=rec.on_ready, report=rec.report, rescan=3600)
    async with running(watch):
        for i in range(5):
            write(tmp_path / f"lost-{i}.csv", age=60)
        await until(lambda: len(rec.offered) == 5, "the files whose events were lost offered")
    assert rec.names() == [f"lost-{i}.csv" for i in range(5)]
