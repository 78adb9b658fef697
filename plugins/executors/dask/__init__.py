"""Task bodies on a Dask distributed cluster: ``@flow.task(executor="dask")``.

The service still decides everything (limits, retries, timeouts, cancellation, rules, SLAs);
this plugin only submits the body to the cluster, one Dask task per attempt, and brings back
its outcome. Dask is imported when the first such attempt starts, never before::

    [executors.dask]
    address = "tcp://scheduler.internal:8786"   # an existing cluster
    # or: local = { workers = 2, threads_per_worker = 1 }   (one machine, tests)

Each attempt is a Dask task with a key of its own (``pure=False``) and Dask's retries off
(``retries=0``): the task's retry policy decides. A timeout or a cancel cancels the future.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pickle
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import anyio

from plugins.executors.dask.options import DaskOptions, problems, read
from runtime.abc import AttemptCall, Executor
from runtime.define.importing import is_flow_module
from runtime.define.remote import deliver, portable
from runtime.errors import ExecutorConnectionError, ExecutorError, WorkerLostError

__all__ = ["DaskExecutor"]

log = logging.getLogger("sluiceway.plugins.dask")

CANCEL_TIMEOUT = 5.0  # seconds a future's cancel may take (the scheduler may be gone)


class DaskExecutor(Executor):
    """Runs task bodies on a Dask cluster through one asynchronous ``distributed.Client`` on
    the service's event loop; connects on first use and again after a lost connection."""

    plugin: ClassVar[str] = "dask"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        return problems(options)

    def __init__(self, options: Mapping[str, Any]) -> None:
        super().__init__(options)
        self.settings: DaskOptions = read(options)
        self._client: Any = None
        self._cluster: Any = None
        self._lock = anyio.Lock()
        self._by_value: set[str] = set()
        self._checked: str | None = None  # the scheduler whose allowed-failures was read

    @property
    def address(self) -> str:
        """The scheduler's address (a local cluster's once it started)."""
        if self._cluster is not None:
            return str(self._cluster.scheduler_address)
        return self.settings.address or "a local cluster"

    async def call(
        self, fn: Callable[..., Any], args: Mapping[str, Any], attempt: AttemptCall
    ) -> Any:
        client = await self._connect()  # imports distributed in a thread the first time
        import cloudpickle

        from plugins.executors.dask import worker

        self._ship_by_value(fn)
        # pickled here and unpickled by the worker inside the attempt (worker.run_def)
        try:
            payload = cloudpickle.dumps((fn, portable(args)))
        except Exception as exc:
            raise ExecutorError(
                f"attempt {attempt.attempt}'s function or arguments cannot be sent to a Dask "
                f"worker: {type(exc).__name__}: {exc}; pass what pickles (a path, a table "
                "name) between a local task and a Dask one"
            ) from exc
        body: tuple[Any, ...] = (worker.run_def, payload)
        if attempt.is_async:
            body = (worker.run_async, payload, attempt.key)
        future = client.submit(
            *body, key=attempt.key, pure=False, retries=0, resources=attempt.resources
        )
        try:
            packed = await future
        except BaseException as exc:
            await self._cancel(client, future)  # a timeout or a cancel frees the worker
            translated = self._translate(exc, attempt)
            if translated is exc:  # a cancel of this attempt, or the worker's own error
                raise
            raise translated from exc
        finally:
            future.release()
        shipped = pickle.loads(packed)
        attempt.where = shipped.worker
        return deliver(shipped, args.get("run"))

    def _translate(self, exc: BaseException, attempt: AttemptCall) -> BaseException:
        """Dask's own failures as errors that say what happened; the task's own pass."""
        from concurrent.futures import CancelledError

        from distributed.comm.core import CommClosedError
        from distributed.scheduler import KilledWorker

        if isinstance(exc, asyncio.CancelledError):
            return exc
        if isinstance(exc, KilledWorker):
            worker = getattr(exc.last_worker, "address", None) or str(exc.last_worker)
            attempt.where = worker
            return WorkerLostError(
                f"Dask worker {worker} died while it ran attempt {attempt.attempt} (its "
                "process ended or was killed); the task's retry policy decides what follows"
            )
        if isinstance(exc, CancelledError | CommClosedError | OSError):
            return ExecutorConnectionError(
                f"lost the connection to the Dask scheduler at {self.address} while attempt "
                f"{attempt.attempt} ran ({type(exc).__name__}: {exc}); later attempts connect "
                "again"
            )
        exc.add_note(f"raised by Dask around attempt {attempt.attempt}'s body, not by the body")
        return exc

    async def _cancel(self, client: Any, future: Any) -> None:
        with anyio.move_on_after(CANCEL_TIMEOUT, shield=True):
            try:
                await client.cancel([future], force=True, reason="cancelled by sluiceway")
            except Exception as exc:  # noqa: BLE001 - the connection is gone: the scheduler releases it
                log.debug("cancel of %s failed: %s", future.key, exc)

    def _ship_by_value(self, fn: Callable[..., Any]) -> None:
        """Flow files are not importable on workers: their functions (and the helpers they
        call in the same file) travel by value."""
        name = getattr(fn, "__module__", None)
        if name and name not in self._by_value and is_flow_module(name) and name in sys.modules:
            import cloudpickle

            cloudpickle.register_pickle_by_value(sys.modules[name])
            self._by_value.add(name)

    async def _connect(self) -> Any:
        """The client, connected now if it is not (first use, or a lost scheduler)."""
        async with self._lock:
            client = self._client
            if client is not None and client.status == "running":
                if _scheduler_id(client) != self._checked:  # it reconnected to a new one
                    await self._check_reruns(client)
                return client
            self._client = None
            if client is not None:
                await _close_quietly(client)
            try:
                with anyio.fail_after(self.settings.connect_timeout + 30):
                    self._client = await self._open_client()
            except Exception as exc:
                raise ExecutorConnectionError(
                    f"cannot connect to the Dask scheduler at {self.address}: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            log.info("connected to the Dask scheduler at %s", self.address)
            await self._check_reruns(self._client)
            return self._client

    async def _check_reruns(self, client: Any) -> None:
        """Warn when the scheduler runs a task again after its worker died: one attempt may
        then run the body several times, and no worker loss reaches the retry policy."""
        from plugins.executors.dask import worker

        self._checked = _scheduler_id(client)
        try:
            with anyio.fail_after(self.settings.connect_timeout):
                allowed = await client.run_on_scheduler(worker.allowed_failures)
        except Exception as exc:  # noqa: BLE001 - only a warning is at stake
            log.debug("cannot read the scheduler's allowed-failures: %s", exc)
            return
        if allowed:
            log.warning(
                "the Dask scheduler at %s runs a task again on another worker when its worker "
                "dies (distributed.scheduler.allowed-failures = %d): one attempt may run its "
                "body up to %d times; set DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=0 for "
                "the scheduler so that a lost worker fails the attempt and the task's retry "
                "policy decides",
                self.address,
                allowed,
                allowed + 1,
            )

    async def _open_client(self) -> Any:
        # importing distributed takes about a second: not on the event loop
        await anyio.to_thread.run_sync(importlib.import_module, "distributed")
        import dask
        import distributed

        settings = self.settings
        if settings.local is not None and self._cluster is None:
            self._cluster = await _start_local(settings.local)
        with dask.config.set({"distributed.client.heartbeat": f"{settings.heartbeat}s"}):
            return await distributed.Client(  # type: ignore[no-untyped-call]
                self._cluster.scheduler_address if self._cluster else settings.address,
                asynchronous=True,
                timeout=f"{settings.connect_timeout}s",
                set_as_default=False,
            )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None:
            await _close_quietly(client)
        if cluster is not None:  # its own loop, in its own thread
            with anyio.move_on_after(CANCEL_TIMEOUT * 2, shield=True):
                try:
                    await anyio.to_thread.run_sync(cluster.close, abandon_on_cancel=True)
                except Exception as exc:  # noqa: BLE001 - closing what may be broken already
                    log.debug("closing the local cluster failed: %s", exc)


async def _start_local(local: Mapping[str, Any]) -> Any:
    """A LocalCluster on this machine, whose scheduler fails a task whose worker died
    (``allowed-failures = 0``) instead of running it again elsewhere: the task's retry
    policy decides.

    Started in a thread, with its own event loop there (Dask's LoopRunner): starting worker
    processes would block the service's loop for about a second, and a busy service loop
    never delays the scheduler.
    """

    def start() -> Any:
        import dask
        import distributed

        with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
            return distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=local["workers"],
                threads_per_worker=local["threads_per_worker"],
                processes=local["processes"],
                dashboard_address=":0",  # any free port: 8787 may be taken
                host="127.0.0.1",
            )

    return await anyio.to_thread.run_sync(start, abandon_on_cancel=True)


def _scheduler_id(client: Any) -> str | None:
    """The id of the scheduler *client* is connected to (a restarted one has a new id)."""
    info = client.scheduler_info() if client.scheduler_comm is not None else {}
    found = info.get("id") if isinstance(info, dict) else None
    return str(found) if found else None


async def _close_quietly(thing: Any) -> None:
    with anyio.move_on_after(CANCEL_TIMEOUT, shield=True):
        try:
            await thing.close()
        except Exception as exc:  # noqa: BLE001 - closing what may be broken already
            log.debug("closing %r failed: %s", thing, exc)
