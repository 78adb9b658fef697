"""What runs on a Dask worker: the task's body with a portable ``run`` context, and what goes
back to the service, pickled there so that a result that cannot travel is a clear error.

Workers import this module by name (the functions below are pickled by reference), so
Sluiceway must be installed on them; the task's own function travels by value.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import cloudpickle
from distributed import get_worker

from runtime.define.remote import Shipped, acall_here, call_here, failure, unpicklable_error
from runtime.errors import ResultNotShippableError

WATCH = 0.1  # seconds between looks at whether an async body's Dask task was cancelled
# the states of a worker's task once its future was cancelled (or the key forgotten)
GONE = frozenset({"cancelled", "released", "forgotten"})


def run_def(payload: bytes) -> bytes:
    """Call a ``def`` body in the worker's thread; its outcome, pickled.

    :param payload: ``(fn, args)`` pickled by the service: unpickled here, where a failure
        (a module missing on this worker) is the attempt's error, not the worker's death
        (Dask's own unpickling of a task's arguments fails the worker's connection)
    """
    address = _address()
    loaded = _load(payload, address)
    if isinstance(loaded, Shipped):
        return pack(loaded)
    fn, args = loaded
    return pack(call_here(fn, args, address))


async def run_async(payload: bytes, key: str) -> bytes:
    """Await an ``async def`` body on the worker's event loop; its outcome, pickled.

    Dask cancels an async task only when its worker closes, not when its future is
    cancelled: this watches the task's state on the worker and cancels the body once the
    service cancelled the future (a timeout, ``sluiceway cancel``), so the slot is freed.
    """
    worker = get_worker()
    loaded = _load(payload, worker.address)
    if isinstance(loaded, Shipped):
        return pack(loaded)
    fn, args = loaded
    body = asyncio.ensure_future(acall_here(fn, args, worker.address))
    while True:
        done, _ = await asyncio.wait({body}, timeout=WATCH)
        if done:
            return pack(body.result())
        state = worker.state.tasks.get(key)
        if state is None or state.state in GONE:
            body.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await body
            # nobody waits for it any more; Dask drops what it returns
            return b""


def _load(payload: bytes, address: str | None) -> tuple[Callable[..., Any], Any] | Shipped:
    """The body and its arguments, or the failure to load them here, said as such."""
    try:
        fn, args = cloudpickle.loads(payload)
    except BaseException as exc:  # noqa: BLE001 - the attempt's outcome, shipped back
        exc.add_note(
            f"raised while loading the task on Dask worker {address}, before its body ran: "
            "is every module the task uses installed there?"
        )
        return failure(exc, address)
    return fn, args


def _address() -> str | None:
    try:
        return str(get_worker().address)
    except ValueError:  # not on a worker (called directly)
        return None


def pack(shipped: Shipped) -> bytes:
    """*shipped* pickled; a value or an error that does not pickle is replaced by an error
    saying so (the lines and checks still travel)."""
    try:
        return bytes(cloudpickle.dumps(shipped))
    except Exception as exc:  # noqa: BLE001 - whatever pickling raises, said as such
        if shipped.error is not None:
            return bytes(cloudpickle.dumps(unpicklable_error(shipped, exc)))
        kind = type(shipped.value).__name__
        shipped.value = None
        shipped.error = ResultNotShippableError(
            f"the task's result (a {kind}) cannot be sent back from Dask worker "
            f"{shipped.worker}: {type(exc).__name__}: {exc}; return something that pickles, "
            "or write large data where the next task can read it and return its path"
        )
        return bytes(cloudpickle.dumps(shipped))


def allowed_failures(dask_scheduler: Any) -> int:
    """On the scheduler: how many workers may die running one task before it fails."""
    return int(dask_scheduler.allowed_failures)
