"""Moving, deleting or leaving a claimed file: never over another name, never a file whose
content is not the claim's, across file systems, errors returned rather than raised."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from plugins.triggers.files import moving
from plugins.triggers.files.moving import free_name, settle_file
from plugins.triggers.files.spec import Action


def _file(path: Path, text: str = "id\n1\n") -> tuple[Path, int, int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    st = path.stat()
    return path, st.st_size, st.st_mtime_ns


def test_a_move_renames_into_the_folder(tmp_path: Path) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "orders.csv")
    got = settle_file(src, size, mtime, Action("move", tmp_path / "done"))
    assert got == moving.Outcome("moved", moved_to=str(tmp_path / "done" / "orders.csv"))
    assert not src.exists()
    moved = tmp_path / "done" / "orders.csv"
    assert moved.read_text() == "id\n1\n"
    assert moved.stat().st_mtime_ns == mtime  # a rename keeps the file as it was


def test_a_move_creates_the_target_folder(tmp_path: Path) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "a.csv")
    target = tmp_path / "archive" / "2026" / "03"
    got = settle_file(src, size, mtime, Action("move", target))
    assert got.outcome == "moved"
    assert (target / "a.csv").exists()


@pytest.mark.parametrize(
    ("name", "taken", "expected"),
    [
        ("orders.csv", ["orders.csv"], "orders.1.csv"),
        ("orders.csv", ["orders.csv", "orders.1.csv"], "orders.2.csv"),
        ("dump.tar.gz", ["dump.tar.gz"], "dump.1.tar.gz"),
        ("README", ["README"], "README.1"),
        ("new.csv", ["other.csv"], "new.csv"),
    ],
    ids=["clash", "two-clashes", "double-extension", "no-extension", "no-clash"],
)
def test_a_name_clash_gets_a_suffix(
    tmp_path: Path, name: str, taken: list[str], expected: str
) -> None:
    done = tmp_path / "done"
    for other in taken:
        _file(done / other, "older\n")
    src, size, mtime = _file(tmp_path / "inbox" / name, "newer\n")
    got = settle_file(src, size, mtime, Action("move", done))
    assert got.moved_to == str(done / expected)
    assert (done / expected).read_text() == "newer\n"
    for other in taken:
        assert (done / other).read_text() == "older\n"  # never overwritten


def test_free_name_reserves_the_name(tmp_path: Path) -> None:
    first = free_name(tmp_path, "a.csv")
    second = free_name(tmp_path, "a.csv")  # a second mover racing the first
    assert (first.name, second.name) == ("a.csv", "a.1.csv")
    assert first.exists()


def test_a_rewritten_file_is_not_moved(tmp_path: Path) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "a.csv", "v1\n")
    src.write_text("version 2\n")  # rewritten after its claim: it gets its own run
    got = settle_file(src, size, mtime, Action("move", tmp_path / "done"))
    assert got.outcome == "kept"
    assert got.error is not None
    assert "changed since it was claimed" in got.error
    assert src.read_text() == "version 2\n"
    assert not (tmp_path / "done").exists()


def test_a_rewritten_file_is_not_deleted(tmp_path: Path) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "a.csv", "v1\n")
    os.utime(src, ns=(mtime + 10**9, mtime + 10**9))  # same size, new mtime
    assert settle_file(src, size, mtime, Action("delete")).outcome == "kept"
    assert src.exists()


def test_a_gone_file_is_kept_as_gone(tmp_path: Path) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "a.csv")
    src.unlink()
    got = settle_file(src, size, mtime, Action("move", tmp_path / "done"))
    assert got == moving.Outcome("kept", error="the file is gone")


def test_delete_and_leave(tmp_path: Path) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "a.csv")
    assert settle_file(src, size, mtime, Action("leave")).outcome == "left"
    assert src.exists()
    assert settle_file(src, size, mtime, Action("delete")).outcome == "deleted"
    assert not src.exists()


def test_across_file_systems_copy_then_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "big.csv", "x" * 300_000)
    _file(tmp_path / "done" / "big.csv", "older\n")
    real_rename = os.rename

    def rename(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if Path(a) == src:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    got = settle_file(src, size, mtime, Action("move", tmp_path / "done"))
    assert got == moving.Outcome("moved", moved_to=str(tmp_path / "done" / "big.1.csv"))
    assert not src.exists()
    copied = tmp_path / "done" / "big.1.csv"
    assert copied.read_text() == "x" * 300_000
    assert copied.stat().st_mtime_ns == mtime  # the copy keeps the file's times
    assert sorted(p.name for p in (tmp_path / "done").iterdir()) == ["big.1.csv", "big.csv"]


def test_a_failed_move_is_returned_and_leaves_no_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "a.csv")

    def rename(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(a))

    monkeypatch.setattr(os, "rename", rename)
    got = settle_file(src, size, mtime, Action("move", tmp_path / "done"))
    assert got.outcome == "failed"
    assert got.error is not None
    assert got.error.startswith(f"cannot move to {tmp_path / 'done'}: ")
    assert "Permission denied" in got.error
    assert src.exists()
    assert list((tmp_path / "done").iterdir()) == []  # the reserved name is given back


def test_a_target_that_cannot_be_made_is_a_failure(tmp_path: Path) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "a.csv")
    (tmp_path / "blocked").write_text("a file, not a folder")
    got = settle_file(src, size, mtime, Action("move", tmp_path / "blocked" / "done"))
    assert got.outcome == "failed"
    assert src.exists()


def test_a_file_rewritten_during_a_cross_device_copy_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, size, mtime = _file(tmp_path / "inbox" / "a.csv", "v1\n")
    real_copy = shutil.copyfileobj

    def rename(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def copy_then_rewrite(fin: object, fout: object, length: int = 0) -> None:
        real_copy(fin, fout, length)  # type: ignore[arg-type]
        src.write_text("v2 arrived meanwhile\n")

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "copyfileobj", copy_then_rewrite)
    got = settle_file(src, size, mtime, Action("move", tmp_path / "done"))
    assert got.outcome == "failed"
    assert src.read_text() == "v2 arrived meanwhile\n"
    assert list((tmp_path / "done").iterdir()) == []
