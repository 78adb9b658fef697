"""The watched folder itself: missing at start, deleted, replaced; polling when asked or when
inotify cannot be used."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugins.triggers.files import inotify, scanning, watching
from plugins.triggers.files.watching import FolderWatch
from tests.plugins.triggers.watchkit import Recorder, make_spec, until, write
from tests.plugins.triggers.watchkit import watching as running

LONG = 600.0


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every look at whether the folder is usable; looks come every 50 ms."""
    seen: list[Path] = []

    def counted(folder: Path) -> str | None:
        seen.append(folder)
        return scanning.folder_problem(folder)

    monkeypatch.setattr(watching, "folder_problem", counted)
    monkeypatch.setattr(watching, "CHECK_EVERY", 0.05)
    return seen


async def test_a_missing_folder_is_reported_once_then_picked_up(
    tmp_path: Path, checks: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sluiceway.plugins.files")
    inbox = tmp_path / "inbox"
    rec = Recorder()
    watch = FolderWatch(make_spec(inbox, stable_for=LONG), on_ready=rec.on_ready, report=rec.report)
    async with running(watch):  # started() although the folder is missing
        await until(lambda: len(checks) >= 10, "ten looks at the missing folder")
        expected = (
            f"folder {inbox} does not exist; the files() trigger of flow 'ingest' "
            "(flows/ingest.py:3) picks it up when it appears"
        )
        assert rec.reports == [expected]
        inbox.mkdir()
        write(inbox / "a.csv", age=60)
        await until(lambda: rec.offered, "a.csv offered")
        write(inbox / "b.csv", age=60)  # and watched from then on
        await until(lambda: len(rec.offered) == 2, "b.csv offered")
    assert len(rec.reports) == 1
    assert any(f"folder {inbox} is back" in r.getMessage() for r in caplog.records)


def _a_file(tmp: Path) -> Path:
    (tmp / "inbox").write_text("x")
    return tmp / "inbox"


def _below_a_file(tmp: Path) -> Path:
    (tmp / "f").write_text("x")
    return tmp / "f" / "inbox"


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (_a_file, "is a file, not a folder"),
        (_below_a_file, "does not exist (a part of its path is a file)"),
    ],
    ids=["folder-is-a-file", "parent-is-a-file"],
)
async def test_a_folder_that_is_a_file_is_reported(
    tmp_path: Path, make: Callable[[Path], Path], problem: str, checks: list[Path]
) -> None:
    inbox = make(tmp_path)
    rec = Recorder()
    watch = FolderWatch(make_spec(inbox), on_ready=rec.on_ready, report=rec.report)
    async with running(watch):
        await until(lambda: len(checks) >= 5, "five looks at the folder")
    assert len(rec.reports) == 1
    assert rec.reports[0].startswith(f"folder {inbox} {problem};")


async def test_a_folder_deleted_and_made_again_is_watched_again(
    tmp_path: Path, checks: list[Path]
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rec = Recorder()
    watch = FolderWatch(make_spec(inbox, stable_for=LONG), on_ready=rec.on_ready, report=rec.report)
    async with running(watch):
        write(inbox / "a.csv", age=60)
        await until(lambda: rec.offered, "a.csv offered")
        shutil.rmtree(inbox)
        await until(lambda: rec.reports, "the deleted folder reported")
        assert rec.reports[0].startswith(f"folder {inbox} does not exist")
        inbox.mkdir()
        write(inbox / "b.csv", age=60)
        await until(lambda: len(rec.offered) == 2, "b.csv offered")
        write(inbox / "c.csv", age=60)
        await until(lambda: len(rec.offered) == 3, "c.csv offered")
    assert rec.names() == ["a.csv", "b.csv", "c.csv"]
    assert len(rec.reports) == 1


async def test_a_folder_replaced_at_once_is_watched_again(tmp_path: Path) -> None:
    """inotify goes deaf on a folder deleted and made again; the identity check notices."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    rec = Recorder()
    watch = FolderWatch(
        make_spec(inbox, stable_for=LONG), on_ready=rec.on_ready, report=rec.report, rescan=LONG
    )
    async with running(watch):
        os.rename(inbox, tmp_path / "old-inbox")  # no "deleted" event for the root itself
        inbox.mkdir()
        await until(lambda: (tmp_path / "old-inbox").exists(), "the swap")
        for i in range(3):
            write(inbox / f"f{i}.csv", age=60)
        await until(lambda: len(rec.offered) == 3, "the files in the new folder offered")
    assert rec.reports == []  # it never was missing


async def test_force_poll_finds_files_without_inotify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sluiceway.plugins.files")
    monkeypatch.setattr(inotify, "RustNotify", _no_inotify)
    rec = Recorder()
    watch = FolderWatch(
        make_spec(tmp_path, stable_for="100ms"),
        on_ready=rec.on_ready,
        report=rec.report,
        force_poll=True,
        poll_interval=0.05,
    )
    async with running(watch):
        write(tmp_path / "a.csv")
        await until(lambda: rec.offered, "a.csv offered")
        write(tmp_path / "a.csv", "rewritten\n")
        await until(lambda: len(rec.offered) == 2, "a.csv offered again")
    assert [f.size for f in rec.offered] == [8, 10]
    assert any(
        "polling" in r.getMessage() and "[files] poll" in r.getMessage() for r in caplog.records
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_poll_on_the_trigger_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inotify, "RustNotify", _no_inotify)
    rec = Recorder()
    spec = make_spec(tmp_path, stable_for=LONG, poll="50ms")
    watch = FolderWatch(spec, on_ready=rec.on_ready, report=rec.report, poll_interval=3600)
    async with running(watch):
        write(tmp_path / "a.csv", age=60)
        await until(lambda: rec.offered, "a.csv offered by a poll")


@pytest.mark.parametrize(
    ("error", "says"),
    [
        (OSError("OS file watch limit reached. about [...]"), "fs.inotify.max_user_watches"),
        (OSError(28, "No space left on device"), "fs.inotify.max_user_watches"),
        (RuntimeError("Error creating watcher: boom"), "Error creating watcher: boom"),
    ],
    ids=["watch-limit", "enospc", "internal"],
)
async def test_a_failing_watch_falls_back_to_polling_with_a_warning(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    says: str,
) -> None:
    def failing(*args: Any) -> Any:
        raise error

    monkeypatch.setattr(inotify, "RustNotify", failing)
    rec = Recorder()
    watch = FolderWatch(
        make_spec(tmp_path, stable_for=LONG),
        on_ready=rec.on_ready,
        report=rec.report,
        poll_interval=0.05,
    )
    async with running(watch):
        write(tmp_path / "a.csv", age=60)
        await until(lambda: rec.offered, "a.csv offered by a poll")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"cannot watch {tmp_path} with inotify" in warnings[0]
    assert says in warnings[0]
    assert "polling it every 0.05s" in warnings[0]
    assert rec.reports == []


async def test_a_network_file_system_is_polled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(watching, "network_fs", lambda folder: "nfs4")
    monkeypatch.setattr(inotify, "RustNotify", _no_inotify)
    rec = Recorder()
    watch = FolderWatch(
        make_spec(tmp_path, stable_for=LONG),
        on_ready=rec.on_ready,
        report=rec.report,
        poll_interval=0.05,
    )
    async with running(watch):
        write(tmp_path / "a.csv", age=60)
        await until(lambda: rec.offered, "a.csv offered by a poll")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"flow=ingest folder {tmp_path} is on nfs4: polling it every 0.05s instead of inotify"
    ]


def test_network_fs_reads_the_mount_table(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(
        "22 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n"
        "40 22 0:50 / /mnt/share rw,relatime - nfs4 server:/export rw,vers=4.2\n"
        "41 40 0:51 / /mnt/share/local rw - tmpfs tmpfs rw\n"
        "42 22 0:52 / /mnt/with\\040space rw - cifs //srv/x rw\n"
    )
    assert scanning.network_fs(Path("/mnt/share/inbox"), str(table)) == "nfs4"
    assert scanning.network_fs(Path("/mnt/share"), str(table)) == "nfs4"
    assert scanning.network_fs(Path("/mnt/share/local/in"), str(table)) is None
    assert scanning.network_fs(Path("/mnt/sharex"), str(table)) is None
    assert scanning.network_fs(Path("/mnt/with space/in"), str(table)) == "cifs"
    assert scanning.network_fs(Path("/srv"), str(tmp_path / "no-such-table")) is None


def _no_inotify(*args: Any) -> Any:
    raise AssertionError("inotify was used while polling")
