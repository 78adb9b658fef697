"""Scanning a folder and classifying one file, on real files: names, subfolders, symlinks,
folders named like files, files that vanish."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from plugins.triggers.files.scanning import (
    FileState,
    classify,
    folder_problem,
    scan_folder,
    stat_files,
    stat_paths,
)
from tests.plugins.triggers.watchkit import make_spec, write


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    (folder / ".cache").mkdir()
    (folder / "dir.csv").mkdir()
    write(folder / "old.csv", age=3600)
    write(folder / "fresh.csv")
    write(folder / "notes.txt", age=3600)
    write(folder / "skip_me.csv", age=3600)
    write(folder / "upload.csv.part", age=3600)
    write(folder / "sub" / "deep.csv", age=3600)
    write(folder / ".cache" / "hidden.csv", age=3600)
    return folder


@pytest.mark.parametrize(
    ("name", "state", "why"),
    [
        ("old.csv", "ready", None),
        ("fresh.csv", "waiting", "unchanged for less than stable_for=30s"),
        ("notes.txt", "ignored", "does not match pattern='*.csv'"),
        ("skip_me.csv", "ignored", "matches ignore='skip_*'"),
        ("upload.csv.part", "ignored", "hidden or temporary name (*.part)"),
        (".hidden.csv", "ignored", "hidden or temporary name (.*)"),
        ("dir.csv", "ignored", "a folder, not a file"),
        ("sub/deep.csv", "ignored", "in a subfolder, and the trigger has recursive=False"),
        ("gone.csv", "unreadable", "vanished: no such file"),
        ("../elsewhere.csv", "ignored", "not in the watched folder"),
    ],
)
def test_classify(inbox: Path, name: str, state: str, why: str | None) -> None:
    now = time.time()
    spec = make_spec(inbox, pattern="*.csv", ignore=["skip_*"], stable_for="30s")
    got = classify(spec, (inbox / name).resolve() if ".." in name else inbox / name, now)
    assert (got.state, got.why and got.why.split(" /")[0]) == (state, why)


def test_classify_says_when_a_waiting_file_will_be_ready(inbox: Path) -> None:
    spec = make_spec(inbox, stable_for="30s")
    mtime = (inbox / "fresh.csv").stat().st_mtime_ns
    assert classify(spec, Path("fresh.csv"), mtime / 1e9 + 29) == FileState(
        inbox / "fresh.csv",
        "waiting",
        "unchanged for less than stable_for=30s",
        8,
        mtime,
        mtime / 1e9 + 30,
    )
    ready = classify(spec, inbox / "fresh.csv", mtime / 1e9 + 30.001)
    assert (ready.state, ready.ready_at, ready.size) == ("ready", None, 8)


def test_classify_recursive(inbox: Path) -> None:
    spec = make_spec(inbox, recursive=True)
    assert classify(spec, inbox / "sub" / "deep.csv", time.time()).state == "ready"
    hidden = classify(spec, inbox / ".cache" / "hidden.csv", time.time())
    assert (hidden.state, hidden.why) == ("ignored", "in a hidden subfolder (.cache)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_classify_without_permission(inbox: Path) -> None:
    (inbox / "sub").chmod(0)
    try:
        got = classify(make_spec(inbox, recursive=True), inbox / "sub" / "deep.csv", time.time())
    finally:
        (inbox / "sub").chmod(0o755)
    assert (got.state, got.why) == ("unreadable", "cannot stat: Permission denied")


def test_a_scan_finds_files_for_the_spec_only(inbox: Path) -> None:
    spec = make_spec(inbox, pattern="*.csv", ignore=["skip_*"])
    problem, files = scan_folder(spec)
    assert problem is None
    assert sorted(f.path.name for f in files) == ["fresh.csv", "old.csv"]
    problem, files = scan_folder(make_spec(inbox, pattern="*.csv", recursive=True))
    assert sorted(f.path.relative_to(inbox).as_posix() for f in files) == [
        "fresh.csv",
        "old.csv",
        "skip_me.csv",
        "sub/deep.csv",
    ]
    old = next(f for f in files if f.path.name == "old.csv")
    st = (inbox / "old.csv").stat()
    assert (old.size, old.mtime_ns, old.ctime_ns) == (8, st.st_mtime_ns, st.st_ctime_ns)


def test_symlinks_to_files_are_followed_and_folder_loops_are_not(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    (folder / "sub").mkdir(parents=True)
    outside = write(tmp_path / "outside.csv")
    (folder / "link.csv").symlink_to(outside)
    (folder / "dangling.csv").symlink_to(tmp_path / "nothing.csv")
    (folder / "sub" / "loop").symlink_to(folder)  # a cycle
    (folder / "sub" / "again").symlink_to(folder / "sub")
    write(folder / "sub" / "deep.csv")
    problem, files = scan_folder(make_spec(folder, recursive=True))
    assert problem is None
    names = sorted(f.path.relative_to(folder).as_posix() for f in files)
    assert names == ["link.csv", "sub/deep.csv"]  # each folder listed once
    assert next(f for f in files if f.path.name == "link.csv").path == folder / "link.csv"


def test_a_scan_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    assert scan_folder(make_spec(tmp_path / "nope")) == (
        f"folder {tmp_path / 'nope'} does not exist",
        [],
    )
    write(tmp_path / "file")
    assert (
        folder_problem(tmp_path / "file") == f"folder {tmp_path / 'file'} is a file, not a folder"
    )


def test_stats_of_event_paths_skip_what_is_not_for_the_spec(inbox: Path) -> None:
    spec = make_spec(inbox, pattern="*.csv")
    paths = [inbox / n for n in ["old.csv", "gone.csv", "dir.csv", "notes.txt", "upload.csv.part"]]
    paths += [inbox / "sub" / "deep.csv", inbox.parent / "x.csv"]
    assert [s.path.name for s in stat_paths(spec, map(str, paths))] == ["old.csv"]
    # recursive: a new subfolder is listed, its files may have landed before its watch
    deep = stat_paths(make_spec(inbox, recursive=True), [str(inbox / "sub"), str(inbox / ".cache")])
    assert [s.path.name for s in deep] == ["deep.csv"]  # not .cache/hidden.csv
    assert [s.path.name for s in stat_files([str(inbox / "old.csv"), str(inbox / "gone.csv")])] == [
        "old.csv"
    ]
