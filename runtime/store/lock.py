"""Who owns the database and its runs: the service's exclusive lock (and whether a service
holds it), and process identity."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from runtime.errors import StoreError


class DatabaseLock:
    """``flock`` on ``<db>.lock``, holding the owner's pid; released on close or process death.

    An advisory lock dies with its process, so a ``kill -9`` never leaves a stale lock behind.
    """

    def __init__(self, db: Path) -> None:
        # the file's real path: a symlink (or another spelling) of one database is one lock
        real = Path(os.path.realpath(db))
        self.db = db
        self.path = real.with_name(real.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock now or raise.

        :raises StoreError: naming the database and the pid that holds it
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"{self.db}: another sluiceway service (pid {holder}) is "
                "using this database; stop it or pass another --db"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def service_running(db: Path) -> bool:
    """True when a service holds the lock on *db* (``<db>.lock``, see :class:`DatabaseLock`).

    Takes the lock without waiting and releases it at once; never creates the lock file.
    """
    path = DatabaseLock(db).path
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_start(pid: int) -> str | None:
    """The kernel's start time of *pid* (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: fields are counted after its ')'
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> tuple[int, str | None, str | None]:
    """(pid, boot id, start time) of this process."""
    pid = os.getpid()
    return pid, _boot_id(), _proc_start(pid)


def process_alive(pid: int, boot_id: str | None, proc_start: str | None) -> bool:
    """Whether the process recorded as (pid, boot id, start time) still runs. A reused pid
    or a reboot is not mistaken for it; without /proc, only the pid is checked."""
    if boot_id is not None and _boot_id() not in (None, boot_id):
        return False
    if proc_start is not None and Path("/proc").is_dir():
        return _proc_start(pid) == proc_start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
