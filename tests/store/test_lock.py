"""store/lock.py on its own: one DatabaseLock per database file, refused to a second one with
the holder's pid, given back by release() or the holder's death; and how a recorded process
is recognised as still alive."""

from __future__ import annotations

import fcntl
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import StoreError
from runtime.store.lock import DatabaseLock, process_alive, this_process
from tests.waiting import WAIT

REFUSED = (
    "another sluiceway service (pid {pid}) is using this database; stop it or pass another --db"
)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_the_lock_file_sits_beside_the_database_and_holds_the_pid(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    lock = DatabaseLock(db)
    assert lock.path == tmp_path / "history.db.lock"
    lock.acquire()
    try:
        assert lock.path.read_text() == f"{os.getpid()}\n"
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
        assert not db.exists()  # the lock does not create the database
    finally:
        lock.release()


def test_a_second_lock_on_the_same_database_is_refused_with_the_holder(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    first = DatabaseLock(db)
    first.acquire()
    try:
        fds = open_fds()
        with pytest.raises(StoreError) as refused:
            DatabaseLock(db).acquire()
        assert str(refused.value) == f"{db}: " + REFUSED.format(pid=os.getpid())
        assert open_fds() == fds  # the refused lock closed its file
        assert first.path.read_text() == f"{os.getpid()}\n"  # the holder's pid is kept
    finally:
        first.release()


def test_another_database_in_the_same_folder_has_its_own_lock(tmp_path: Path) -> None:
    first, other = DatabaseLock(tmp_path / "a.db"), DatabaseLock(tmp_path / "b.db")
    first.acquire()
    other.acquire()
    other.release()
    first.release()


def test_release_gives_the_lock_back_and_twice_is_harmless(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    first = DatabaseLock(db)
    first.acquire()
    fds = open_fds()
    first.release()
    assert open_fds() == fds - 1
    first.release()
    second = DatabaseLock(db)
    second.acquire()  # free again
    second.release()
    first.acquire()  # and the first may take it again
    first.release()


def test_a_held_lock_whose_file_names_no_pid_says_unknown(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    path = tmp_path / "history.db.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a holder that has not written yet
        with pytest.raises(StoreError, match=r"\(pid unknown\)"):
            DatabaseLock(db).acquire()
    finally:
        os.close(fd)


def test_a_stale_lock_file_left_by_a_dead_holder_is_taken(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    (tmp_path / "history.db.lock").write_text("4194304\n")  # a pid no process has, no flock
    lock = DatabaseLock(db)
    lock.acquire()
    try:
        assert lock.path.read_text() == f"{os.getpid()}\n"  # the old pid is replaced whole
    finally:
        lock.release()


HOLDER = """
import sys, time
from pathlib import Path
from runtime.store.lock import DatabaseLock

DatabaseLock(Path(sys.argv[1])).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_the_lock_of_a_killed_process_is_free_at_once(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(StoreError, match=f"pid {holder.pid}"):
            DatabaseLock(db).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)  # no release(): the kernel drops the flock
        holder.wait(timeout=WAIT)
        if holder.stdout is not None:
            holder.stdout.close()
    assert (tmp_path / "history.db.lock").read_text() == f"{holder.pid}\n"  # stale now
    lock = DatabaseLock(db)
    lock.acquire()
    lock.release()


def test_this_process_is_alive() -> None:
    pid, boot, start = this_process()
    assert pid == os.getpid()
    assert process_alive(pid, boot, start)
    assert process_alive(pid, None, None)  # a record without /proc details: the pid alone


def test_a_pid_that_no_process_has_is_not_alive() -> None:
    gone = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    _, boot, _ = this_process()
    assert not process_alive(gone, boot, "12345")
    assert not process_alive(gone, None, None)


def test_a_reused_pid_or_another_boot_is_not_the_recorded_process() -> None:
    pid, boot, start = this_process()
    assert start is not None
    assert not process_alive(pid, boot, str(int(start) + 1))  # the pid, but a later process
    if boot is not None:
        assert not process_alive(pid, "another-boot", start)  # recorded before a reboot
