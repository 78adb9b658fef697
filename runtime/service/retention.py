"""The service's retention feeder: ``[history] retention`` applied at start and then every
``prune_interval`` (:mod:`runtime.store.prune` does the deleting)."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import anyio
from anyio.abc import TaskStatus

from runtime.clock import Clock
from runtime.config import HistoryConfig
from runtime.errors import SluicewayError
from runtime.store import Store
from runtime.store.prune import Pruned, prune_history

log = logging.getLogger("sluiceway.runtime.retention")


async def prune_once(store: Store, clock: Clock, retention: float) -> Pruned:
    """Delete what ended more than *retention* seconds before the clock's now; logged."""
    before = clock.now() - timedelta(seconds=retention)
    started = time.monotonic()
    pruned = await prune_history(store, before)
    if pruned.runs:
        log.info(
            "retention: pruned %s that ended before %s, in %.2fs",
            pruned.describe(),
            before.isoformat(timespec="seconds"),
            time.monotonic() - started,
        )
    return pruned


async def run_retention(
    store: Store,
    clock: Clock,
    history: HistoryConfig,
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Prune at start, then every ``history.prune_interval`` seconds, until cancelled; with
    no ``retention`` it only reports started. A pass that fails is logged and the next one
    tries again (the chunks committed before it stay pruned)."""
    task_status.started()
    if history.retention is None:
        return
    log.info(
        "retention: runs that ended more than %gs ago are pruned every %gs",
        history.retention,
        history.prune_interval,
    )
    while True:
        try:
            await prune_once(store, clock, history.retention)
        except SluicewayError as exc:  # a busy or failing disk: say it, try again later
            log.error("retention: pruning failed: %s; trying again in %gs", exc,
                      history.prune_interval)  # fmt: skip
        # the interval on the event loop's clock: an injected test clock moves the cutoff,
        # not the pace
        await anyio.sleep(history.prune_interval)
