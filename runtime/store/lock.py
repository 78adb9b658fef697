"""An exclusive lock on a database file, so two services never share one."""

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
        self.path = db.with_name(db.name + ".lock")
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
                f"{self.path.with_suffix('')}: another sluiceway service (pid {holder}) is "
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
