"""The executor plugins of one engine (``executor="dask"``): made when a task first needs one,
closed with the engine."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import anyio

from runtime import registry
from runtime.abc import Executor

log = logging.getLogger("sluiceway.runtime.executors")

CLOSE_TIMEOUT = 10.0  # seconds an executor may take to close (a local cluster's workers)


class Executors:
    """The configured executors by plugin name; each made on first use.

    Nothing is imported for an executor no task uses: a flow without ``executor=`` never
    loads the Dask plugin (nor Dask).

    :ivar names: the configured names (``[executors.<name>]``), for flow checks
    :ivar token: unique to this process, in every attempt's key: two services (or one
        restarted on a database copy) sharing a cluster never name two attempts alike
    """

    def __init__(self, options: Mapping[str, Mapping[str, Any]]) -> None:
        self.options = {name: dict(value) for name, value in options.items()}
        self.names = frozenset(self.options)
        self.token = os.urandom(4).hex()
        self._made: dict[str, Executor] = {}

    def get(self, name: str) -> Executor:
        """The executor called *name*, made now if it was not yet.

        :raises runtime.registry.PluginError: when it is not configured or does not load
        """
        made = self._made.get(name)
        if made is None:
            if name not in self.options:
                raise registry.PluginError(f"executor {name!r} is not configured")
            cls = registry.executor(name)
            made = self._made[name] = cls(self.options[name])
            log.info("executor %s started", name)
        return made

    async def aclose(self) -> None:
        """Close every executor made (each within :data:`CLOSE_TIMEOUT`, even mid-cancel)."""
        made, self._made = self._made, {}
        for name, executor in made.items():
            with anyio.move_on_after(CLOSE_TIMEOUT, shield=True) as scope:
                try:
                    await executor.aclose()
                except Exception:
                    log.exception("executor %s failed to close", name)
            if scope.cancelled_caught:
                log.warning("executor %s did not close within %gs", name, CLOSE_TIMEOUT)
