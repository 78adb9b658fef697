"""Ctrl-C in a command that runs flows here: the first one cancels softly, the next at once."""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus


async def run_ctrl_c(
    soft: Callable[[], None],
    hard: Callable[[], None],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Until cancelled, call *soft* on the first SIGINT or SIGTERM and *hard* on each later one.

    *soft* cancels the runs (their ``all_done`` tasks still run, their history is committed);
    *hard* stops at once. Start it with ``tg.start``: started once the signals are caught.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        count = 0
        async for _ in signals:
            count += 1
            (soft if count == 1 else hard)()
