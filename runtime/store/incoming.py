"""Runs asked for from outside the service: one run of a named flow (``POST
/api/flows/{flow}/runs``), one run per flow listening to an event (``POST /api/events/{name}``,
``sluiceway emit``). Each is committed before the caller hears of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from runtime.errors import UnknownEventError
from runtime.store import Store, queries

if TYPE_CHECKING:
    from runtime.define.flow import Flow


Read = Callable[..., Awaitable[Any]]
"""Runs a query function of :mod:`runtime.store.queries` on a read connection."""


@dataclass(frozen=True, slots=True)
class Queued:
    """One run asked for: its id, its flow, and whether this request created it (``False``:
    an earlier request with the same idempotency key did)."""

    run_id: int
    flow: str
    created: bool


def listeners(flows: Mapping[str, Flow], event: str) -> list[Flow]:
    """The flows among *flows* with an ``on_event(event)`` trigger, by name."""
    return [
        flow
        for name, flow in sorted(flows.items())
        if any(trigger.name == event for trigger in flow.events)
    ]


def event_trigger(event: str, payload: Any) -> dict[str, Any]:
    """The trigger record of a run started by *event* (``run.trigger``)."""
    return {"kind": "event", "name": event, "payload": payload}


def event_key(event: str, key: str | None) -> str | None:
    """The idempotency key of each flow's run for *event* sent with client key *key*."""
    return None if key is None else f"event:{event}:{key}"


async def queue_run(
    store: Store,
    flow: Flow,
    *,
    params: dict[str, Any],
    trigger: dict[str, Any],
    key: str | None,
    now: datetime,
) -> Queued:
    """Commit a queued run of *flow* with resolved *params*; returns once it is committed.

    The same (flow, *key*) again returns the first run with ``created=False``.
    """
    run_id, created = await store.create_run(
        flow=flow.name,
        params=params,
        trigger=trigger,
        logical_date=now,
        created_at=now,
        key=key,
        source_hash=flow.source_hash(),
    )
    return Queued(run_id, flow.name, created)


async def queue_event(
    store: Store,
    flows: Mapping[str, Flow],
    event: str,
    payload: Any,
    *,
    key: str | None,
    now: datetime,
) -> list[Queued]:
    """Queue one run (with its default params) of every flow in *flows* that listens to
    *event*; the runs are committed together when the writer batches them (it usually
    does), each before this returns. With a client *key*, each flow's run is keyed
    ``event:<event>:<key>``, so sending the event again never makes second runs.

    :returns: one entry per listening flow, by flow name
    :raises UnknownEventError: when no flow in *flows* listens to *event*
    """
    found = listeners(flows, event)
    if not found:
        raise UnknownEventError(event)
    trigger = event_trigger(event, payload)
    queued: list[Queued | None] = [None] * len(found)
    failed: list[Exception] = []

    async def one(index: int, flow: Flow) -> None:
        try:
            queued[index] = await queue_run(
                store,
                flow,
                params=flow.resolve_params({}),
                trigger=trigger,
                key=event_key(event, key),
                now=now,
            )
        except Exception as exc:  # noqa: BLE001 - raised below as itself, not in a group
            failed.append(exc)

    async with anyio.create_task_group() as group:  # one writer batch for all of them
        for index, flow in enumerate(found):
            group.start_soon(one, index, flow)
    if failed:
        raise failed[0]
    return [item for item in queued if item is not None]


async def run_objects(read: Read, queued: list[Queued]) -> list[dict[str, Any]]:
    """The runs of *queued*, each in the ``runs --json`` shape, read with *read* (a
    :meth:`Store.read`; the runs are committed already, so it need not flush)."""
    found: list[dict[str, Any]] = await read(queries.runs_by_id, [item.run_id for item in queued])
    return found
