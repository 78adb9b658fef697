"""What happens to a claimed file after its run: moved into a folder, deleted or left, and
only when it still holds the content that was claimed.

Plain blocking functions (file system calls): the source calls them in a worker thread.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from plugins.triggers.files.spec import Action

__all__ = ["Outcome", "free_name", "settle_file"]

MAX_SUFFIX = 10_000  # name.1.csv ... name.9999.csv, then the move is refused


@dataclass(frozen=True, slots=True)
class Outcome:
    """What :func:`settle_file` did: ``moved`` (to ``moved_to``), ``deleted``, ``left``,
    ``kept`` (not the claimed content any more, or gone: not touched) or ``failed`` (``error``
    says why; the file is where it was)."""

    outcome: str
    moved_to: str | None = None
    error: str | None = None


def _split(name: str) -> tuple[str, str]:
    """``report.csv`` -> (``report``, ``.csv``); ``a.tar.gz`` -> (``a``, ``.tar.gz``); a
    hidden name keeps its leading dot in the stem."""
    head = 1 if name.startswith(".") else 0
    dot = name.find(".", head)
    return (name, "") if dot <= 0 else (name[:dot], name[dot:])


def free_name(folder: Path, name: str) -> Path:
    """Reserve a name in *folder* that nothing else has: *name*, else ``stem.1.ext``,
    ``stem.2.ext``, ... The name is taken by creating an empty file with ``O_EXCL``, so two
    movers (or a writer dropping a file of the same name) cannot both get it; the caller
    renames over it or removes it.

    :raises OSError: when the folder cannot be written, or no name is free
    """
    stem, ext = _split(name)
    for n in range(MAX_SUFFIX):
        candidate = folder / (name if n == 0 else f"{stem}.{n}{ext}")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        os.close(fd)
        return candidate
    raise OSError(errno.EEXIST, f"no free name for {name} in {folder} (tried {MAX_SUFFIX})")


def _same(path: Path, size: int, mtime_ns: int) -> str | None:
    """Why *path* is not the claimed content any more, or ``None`` when it is."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "the file is gone"
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
        return (
            f"the file changed since it was claimed (size {size} -> {st.st_size}, "
            f"mtime_ns {mtime_ns} -> {st.st_mtime_ns}): left for its own run"
        )
    return None


def _copy_across(src: Path, target: Path, size: int, mtime_ns: int) -> None:
    """Move *src* to the reserved *target* on another file system: copy to a hidden temporary
    name beside *target*, flush it, rename it over *target*, then remove *src*."""
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.sluiceway-tmp"
    try:
        with src.open("rb") as fin, tmp.open("xb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        shutil.copystat(src, tmp)
        changed = _same(src, size, mtime_ns)
        if changed is not None:  # rewritten while copying: the copy is not the claim's
            raise OSError(errno.EAGAIN, changed)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    src.unlink()


def _move(src: Path, folder: Path, size: int, mtime_ns: int) -> Outcome:
    folder.mkdir(parents=True, exist_ok=True)
    target = free_name(folder, src.name)
    try:
        try:
            os.rename(src, target)  # over the empty file that reserved the name
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_across(src, target, size, mtime_ns)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return Outcome("moved", moved_to=str(target))


def settle_file(path: Path, size: int, mtime_ns: int, action: Action) -> Outcome:
    """Carry out *action* on the claimed file *path* (claimed at *size* and *mtime_ns*).

    A file whose content is not the claim's any more (rewritten, or gone) is not touched: a
    rewritten file gets its own claim and run. A move never overwrites a name in the target
    folder (``name.1.csv`` instead), creates the folder when missing, and works across file
    systems (copy, then rename into place). Errors are returned, never raised.
    """
    if action.kind == "leave":
        return Outcome("left")
    changed = _same(path, size, mtime_ns)
    if changed is not None:
        return Outcome("kept", error=changed)
    try:
        if action.kind == "delete":
            path.unlink()
            return Outcome("deleted")
        assert action.folder is not None
        return _move(path, action.folder, size, mtime_ns)
    except OSError as exc:
        what = "delete" if action.kind == "delete" else f"move to {action.folder}"
        return Outcome("failed", error=f"cannot {what}: {exc}")
