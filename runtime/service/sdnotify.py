"""The sd_notify protocol in stdlib: READY/STATUS/STOPPING/WATCHDOG datagrams to systemd.

systemd (``Type=notify``) passes the path of a unix datagram socket in ``$NOTIFY_SOCKET``; the
service sends newline-separated ``KEY=value`` lines to it. A name starting with ``@`` is a
Linux abstract socket (the ``@`` stands for a leading NUL byte). Outside systemd the variable is
unset and every call is a no-op, so the service runs the same from a terminal.

Nothing here raises: a failed notification is logged, and the service carries on.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "watchdog_interval"]

log = logging.getLogger("sluiceway.runtime.sdnotify")


def notify(state: str, *, env: Mapping[str, str] | None = None) -> bool:
    """Send *state* (e.g. ``"READY=1"`` or ``"STATUS=loaded 12 flows"``) to systemd.

    Several fields go in one call separated by newlines: ``"STOPPING=1\\nSTATUS=draining"``.

    :param state: the notification, ``KEY=value`` lines
    :param env: the environment to read ``NOTIFY_SOCKET`` from; ``os.environ`` by default
    :returns: True if the datagram was sent; False when ``NOTIFY_SOCKET`` is unset or the send
        failed (the failure is logged, never raised)
    """
    address = (os.environ if env is None else env).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        log.warning("sd_notify: unsupported NOTIFY_SOCKET %r (need a path or @name)", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # never block the event loop: if systemd's queue is full, drop and log instead
            sock.setblocking(False)
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as exc:
        log.warning("sd_notify: sending %r to %r failed: %s", state, address, exc)
        return False
    return True


def watchdog_interval(*, env: Mapping[str, str] | None = None) -> float | None:
    """Return systemd's watchdog timeout in seconds, or ``None`` when there is none for us.

    Reads ``WATCHDOG_USEC`` (set by ``WatchdogSec=``); when ``WATCHDOG_PID`` is set it must be
    this process's id, else the watchdog belongs to another process. Ping ``WATCHDOG=1`` at
    least every half of the returned interval, as sd_watchdog_enabled(3) advises.

    :param env: the environment to read; ``os.environ`` by default
    """
    environ = os.environ if env is None else env
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID", "")
    if pid:
        if not pid.isdigit():
            log.warning("sd_notify: ignoring the watchdog: WATCHDOG_PID=%r is not a pid", pid)
            return None
        if int(pid) != os.getpid():
            return None  # the watchdog is meant for another process (e.g. our parent)
    if not usec.isdigit() or int(usec) == 0:
        log.warning("sd_notify: ignoring the watchdog: WATCHDOG_USEC=%r is not a number", usec)
        return None
    return int(usec) / 1_000_000
