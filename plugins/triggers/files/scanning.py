"""Looking at a watched folder from a worker thread: listing it, statting files, telling why
a folder cannot be watched, and classifying one file for ``sluiceway files``.

Everything here blocks (``os.scandir``, ``os.stat``; on NFS a stat can take long), so the
watcher calls it through ``anyio.to_thread.run_sync``, never on the event loop. Nothing here
raises for a race: a file that vanishes between listing and stat is simply not seen.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from plugins.triggers.files.spec import FilesSpec

# file systems on which inotify does not see changes made by other machines: poll them
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.rclone",
        "lustre",
        "gpfs",
    }
)


@dataclass(frozen=True, slots=True)
class FileFacts:
    """A complete file, as handed to the claimer.

    :ivar path: absolute path (as found under the folder: symlinks are not resolved)
    :ivar size: bytes
    :ivar mtime_ns: modification time, nanoseconds since the epoch
    """

    path: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class FileState:
    """One file as a status display shows it.

    :ivar state: ``"ignored"``, ``"waiting"`` (for stability), ``"ready"`` or
        ``"unreadable"`` (vanished, no permission)
    :ivar why: the reason of an ignored or unreadable file, else ``None``
    :ivar ready_at: wall-clock epoch seconds a waiting file will be ready at (if it stays
        unchanged), else ``None``
    """

    path: Path
    state: str
    why: str | None
    size: int | None
    mtime_ns: int | None
    ready_at: float | None


class Stat(NamedTuple):
    """What one stat of a file says; ``ctime_ns`` tells a rename (see :func:`moved_in`).

    ``key`` is ``str(path)``, made in the worker thread: the watcher keys its dicts and heap
    by it, because hashing a ``Path`` (on the loop, thousands of times in a storm) costs
    more than everything else it does per file.
    """

    path: Path
    key: str
    size: int
    mtime_ns: int
    ctime_ns: int


def moved_in(seen: Stat, stable_for: float, wall: float) -> bool:
    """Whether *seen* looks complete already: written longer than *stable_for* ago, or its
    inode changed after its last write.

    A rename (or hard link) into the folder sets the file's ctime, never its mtime; every
    write sets both to the same instant. So ``ctime > mtime`` is a file renamed in after it
    was written (or chmod-ed after it was written), and an mtime older than the window is a
    file that has been left alone that long (moved in from elsewhere, or there before us).
    """
    return seen.ctime_ns > seen.mtime_ns or seen.mtime_ns <= (wall - stable_for) * 1e9


def folder_problem(folder: Path) -> str | None:
    """Why *folder* cannot be watched now (a sentence naming it), or ``None`` when it can."""
    try:
        st = os.stat(folder)
    except FileNotFoundError:
        return f"folder {folder} does not exist"
    except NotADirectoryError:
        return f"folder {folder} does not exist (a part of its path is a file)"
    except OSError as exc:
        return f"folder {folder} cannot be read: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"folder {folder} is a file, not a folder"
    if not os.access(folder, os.R_OK | os.X_OK):
        return f"folder {folder} cannot be read: permission denied"
    return None


def identity(folder: Path) -> tuple[int, int] | None:
    """The folder's (device, inode): another value means it was deleted and made again."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def network_fs(folder: Path, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the network file system *folder* is on (``"nfs4"``...), or ``None``."""
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    target = os.path.realpath(folder)
    best, fstype = "", ""
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or not rest:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, fstype = mount, rest[0]
    return fstype if fstype in NETWORK_FS else None


def in_scope(spec: FilesSpec, path: Path) -> bool:
    """Whether *path* is where *spec* looks: directly in its folder, or below it (outside
    hidden subfolders) when recursive; says nothing about the name."""
    if path.parent == spec.folder:
        return True
    if not spec.recursive or not path.is_relative_to(spec.folder) or path == spec.folder:
        return False
    return not any(p.startswith(".") for p in path.relative_to(spec.folder).parts[:-1])


def _stat(path: Path) -> Stat | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # vanished, no permission, a name the OS refuses
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return Stat(path, str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def stat_files(keys: Iterable[str]) -> list[Stat]:
    """The regular files among *keys* (paths as strings; symlinks followed) as they are now;
    the others (vanished, a folder now, no permission) are left out."""
    return [seen for key in keys if (seen := _stat(Path(key))) is not None]


def stat_paths(spec: FilesSpec, paths: Iterable[str]) -> list[Stat]:
    """The files among *paths* (from watch events) that are for *spec*; directories among them
    are listed (recursive specs: a new subfolder may hold files already)."""
    found: list[Stat] = []
    for raw in paths:
        path = Path(raw)
        if not in_scope(spec, path):
            continue
        if spec.recursive and os.path.isdir(path) and not os.path.islink(path):
            if not path.name.startswith("."):  # hidden folders are skipped, as by scans
                found.extend(scan_tree(spec, path))
            continue
        if spec.ignored_because(path.name) is None and (seen := _stat(path)) is not None:
            found.append(seen)
    return found


def look_at_changes(
    spec: FilesSpec, changes: Iterable[tuple[int, str]], deleted: int
) -> tuple[list[Stat], list[str]]:
    """``(files, gone)`` after watch events: the files among the changed paths that are for
    *spec* (see :func:`stat_paths`), and the keys of the paths reported *deleted* that are
    not there."""
    changes = list(changes)
    found = stat_paths(spec, (path for _, path in changes))
    there = {s.key for s in found}
    gone = [k for kind, p in changes if kind == deleted and (k := str(Path(p))) not in there]
    return found, gone


def scan_tree(spec: FilesSpec, top: Path | None = None) -> list[Stat]:
    """Every file under *top* (the spec's folder by default) that is for *spec*, recursively
    when the spec says so. Symlinks to files are followed; symlinks to folders too, each
    folder once (no loop). Unreadable subfolders and vanished entries are skipped."""
    found: list[Stat] = []
    seen_dirs: set[tuple[int, int]] = set()
    todo = [top or spec.folder]
    while todo:
        folder = todo.pop()
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen_dirs:
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as entries:
                for entry in entries:
                    _scan_entry(spec, entry, found, todo)
        except OSError:
            continue
    return found


def _scan_entry(
    spec: FilesSpec, entry: os.DirEntry[str], found: list[Stat], todo: list[Path]
) -> None:
    try:
        if entry.is_dir():
            if spec.recursive and not entry.name.startswith("."):
                todo.append(Path(entry.path))
            return
        if not entry.is_file() or spec.ignored_because(entry.name) is not None:
            return
        st = entry.stat()
    except OSError:  # vanished between listing and stat, a dangling symlink, no permission
        return
    found.append(Stat(Path(entry.path), entry.path, st.st_size, st.st_mtime_ns, st.st_ctime_ns))


def scan_folder(spec: FilesSpec) -> tuple[str | None, list[Stat]]:
    """``(problem, files)``: why the folder cannot be read (and no files), or ``None`` and
    every file in it for *spec*."""
    problem = folder_problem(spec.folder)
    if problem is not None:
        return problem, []
    return None, scan_tree(spec)


def classify(spec: FilesSpec, path: Path, now: float) -> FileState:
    """One file as the trigger sees it from outside the service, at wall-clock *now* (epoch
    seconds): ignored and why, waiting for stability (and when it will be ready), ready, or
    unreadable (vanished, no permission).

    A waiting file's ``ready_at`` assumes it stays as it is: its mtime plus ``stable_for``.
    """
    path = path if path.is_absolute() else spec.folder / path

    def state(kind: str, why: str | None, st: os.stat_result | None = None) -> FileState:
        size, mtime = (st.st_size, st.st_mtime_ns) if st is not None else (None, None)
        ready_at = st.st_mtime_ns / 1e9 + spec.stable_for if kind == "waiting" and st else None
        return FileState(path, kind, why, size, mtime, ready_at)

    if not path.is_relative_to(spec.folder) or path == spec.folder:
        return state("ignored", f"not in the watched folder {spec.folder}")
    if path.parent != spec.folder and not spec.recursive:
        return state("ignored", "in a subfolder, and the trigger has recursive=False")
    hidden = next((p for p in path.relative_to(spec.folder).parts[:-1] if p.startswith(".")), None)
    if hidden is not None:
        return state("ignored", f"in a hidden subfolder ({hidden})")
    why = spec.ignored_because(path.name)
    if why is not None:
        return state("ignored", why)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return state("unreadable", "vanished: no such file")
    except OSError as exc:
        return state("unreadable", f"cannot stat: {exc.strerror}")
    if stat.S_ISDIR(st.st_mode):
        return state("ignored", "a folder, not a file", st)
    if not stat.S_ISREG(st.st_mode):
        return state("ignored", "not a regular file", st)
    seen = Stat(path, str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if moved_in(seen, spec.stable_for, now):
        return state("ready", None, st)
    return state("waiting", f"unchanged for less than stable_for={spec.stable_for:g}s", st)
