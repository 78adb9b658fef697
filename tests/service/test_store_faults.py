"""``sluiceway serve`` and its database under faults, as real subprocesses: a symlink to the
database of a running service, and a write lock held by another connection past the busy
timeout (said on the sd_notify STATUS line and in the log, once, then the recovery)."""

from __future__ import annotations

import signal
import sqlite3

import pytest

from runtime.store.lock import service_running
from tests.service.flows import DRAIN, TICK
from tests.service.served import Home
from tests.service.test_service import NotifySocket, wait_runs_ended
from tests.waiting import WAIT, wait_until

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess


def test_a_service_on_a_symlink_to_a_served_database_is_refused(home: Home) -> None:
    (home.flows / "drain.py").write_text(DRAIN)
    first = home.serve()
    first.wait_ready()
    real = home.db
    link = home.root / "elsewhere" / "alias.db"
    link.parent.mkdir()
    link.symlink_to(real)
    assert service_running(link)  # the CLI's check sees it through the link too

    home.db = link  # the second service is given the link
    try:
        second = home.serve()
        code = second.wait_exit(timeout=WAIT)
    finally:
        home.db = real
    assert code == 1, second.describe()
    assert (
        f"sluiceway: {link}: another sluiceway service (pid {first.pid}) is using this "
        "database; stop it or pass another --db"
    ) in second.log()
    assert "service ready" not in second.log()
    assert not (link.parent / "alias.db.lock").exists()
    assert first.proc.poll() is None  # unharmed
    run = home.trigger("quick")
    assert wait_runs_ended(home, 1) == {run: "succeeded"}


def test_a_locked_database_is_said_once_on_the_status_line_and_in_the_log(
    home: Home, notify_socket: NotifySocket
) -> None:
    (home.flows / "tick.py").write_text(TICK)  # a run every second: the service must write
    served = home.serve(NOTIFY_SOCKET=str(notify_socket.path), SLUICEWAY_BUSY_TIMEOUT="0.3s")
    notify_socket.wait_for("READY=1")
    home.wait_rows("SELECT id FROM runs", what="a first scheduled run")
    lock = sqlite3.connect(home.db, timeout=10, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        failing = served.wait_log("cannot commit", timeout=30)

        def status_says(text: str) -> str | None:
            for message in notify_socket.messages:
                for line in message.splitlines():
                    if line.startswith("STATUS=") and text in line:
                        return line
            notify_socket.receive(0.1)
            return None

        line = wait_until(
            lambda: status_says("history NOT committed"),
            "the STATUS line saying it",
            timeout=30,
            details=notify_socket.describe,
        )
        assert "OperationalError: database is locked" in line
        assert "waiting" in line
        seen = len(notify_socket.messages)
        lock.execute("ROLLBACK")
    finally:
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
    served.wait_log("committing again", after=failing, timeout=30)

    def back_to_normal() -> str | None:
        notify_socket.receive(0.1)
        for message in notify_socket.messages[seen:]:
            for text in message.splitlines():
                if text.startswith("STATUS=") and "NOT committed" not in text:
                    return text
        return None

    wait_until(back_to_normal, "a STATUS line without it", timeout=30)
    served.send(signal.SIGTERM)
    assert served.wait_exit(timeout=30) == 0, served.describe()
    store_lines = [line for line in served.log().splitlines() if "runtime.store store" in line]
    assert sum("cannot commit" in line for line in store_lines) == 1, served.log()
    assert sum("committing again" in line for line in store_lines) == 1, served.log()
