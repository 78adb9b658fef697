"""CLI: trigger and cancel, for runs the service executes."""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from runtime import codec
from runtime.cli.output import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    err,
    load_flow,
    out,
    parse_params,
)
from runtime.clock import SystemClock
from runtime.config import Config
from runtime.errors import FlowValidationError, ParamError, UnknownFlowError
from runtime.store import connect_reader, open_store
from runtime.store.lock import service_running
from runtime.store.requests import CancelOutcome, request_cancel, run_brief, served_flow

TRIGGER = {"kind": "manual", "via": "cli"}


def _require_db(config: Config) -> None:
    """Refuse a missing file or a foreign database before writing to it."""
    connect_reader(config.db).close()


def _no_service_note(config: Config, what: str) -> None:
    if not service_running(config.db):
        err(f"note: no service is running on {config.db}: {what}")


# --- trigger ---


def cmd_trigger(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway trigger FLOW [--param k=v] [--key KEY] [--json]``: queue a run.

    A flow that does not load from the flows folder (its file is broken, the folder is
    away) is still queued, with a warning, when the running service has it loaded: the
    service runs its last good version."""
    try:
        flow = load_flow(config, args.flow)
        flow.validate(config.pools, config.executors)
        name, source_hash = flow.name, flow.source_hash()
        params = flow.resolve_params(parse_params(args.param, flow.params))
    except (FlowValidationError, UnknownFlowError) as exc:
        served = _served_flow(config, args.flow)
        problems = exc.problems if isinstance(exc, FlowValidationError) else []
        if served is None:
            if isinstance(exc, UnknownFlowError):
                raise
            for problem in problems:
                err(problem)
            return EXIT_USAGE
        for problem in problems:
            err(f"warning: {problem}")
        err(
            f"warning: flow {args.flow!r} does not load from {config.flows}; the service runs "
            "the last good version it loaded"
        )
        name, source_hash, defaults = args.flow, served["source_hash"], served["params"]
        params = _resolve_params(name, defaults, parse_params(args.param, defaults))
    now = SystemClock().now()

    async def queue() -> tuple[int, bool, str]:
        async with open_store(config.db, interval=config.flush_interval) as store:
            run_id, created = await store.create_run(
                flow=name,
                params=params,
                trigger=TRIGGER,
                logical_date=now,
                created_at=now,
                key=args.key,
                source_hash=source_hash,
            )
            brief = await store.read(run_brief, run_id)
        return run_id, created, brief["state"] if brief else "queued"

    run_id, created, state = anyio.run(queue)
    if args.json:
        out(codec.pretty({"id": run_id, "created": created, "flow": name, "state": state}))
    else:
        out(str(run_id))
    if not created:
        err(f"run {run_id} of {name} already exists for key {args.key!r} ({state})")
    elif state == "queued":
        err(f"queued run {run_id} of {name}")
        _no_service_note(config, f"run {run_id} waits queued until `sluiceway serve` starts")
    return EXIT_OK


def _served_flow(config: Config, name: str) -> dict[str, Any] | None:
    """Flow *name* as the running service has it loaded; ``None`` when no service runs on
    the database or it has no such flow."""
    if not config.db.exists() or not service_running(config.db):
        return None
    conn = connect_reader(config.db)
    try:
        return served_flow(conn, name)
    finally:
        conn.close()


def _resolve_params(
    name: str, defaults: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """The params' *defaults* with *overrides* applied, as :meth:`Flow.resolve_params`.

    :raises ParamError: for a name the flow does not declare
    """
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        known = ", ".join(sorted(defaults)) or "none"
        raise ParamError(
            f"flow {name!r} has no param {', '.join(map(repr, unknown))} (params: {known})"
        )
    return {**defaults, **overrides}


# --- cancel ---


def cmd_cancel(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway cancel RUN_ID``: 0 when cancelled or requested, 1 when ended or missing."""
    _require_db(config)

    async def cancel() -> tuple[CancelOutcome, str]:
        async with open_store(config.db, interval=config.flush_interval) as store:
            return await request_cancel(store, args.run_id, SystemClock().now())

    outcome, state = anyio.run(cancel)
    run = f"run {args.run_id}"
    if outcome is CancelOutcome.CANCELLED:
        out(f"{run} cancelled (it was queued)")
    elif outcome is CancelOutcome.REQUESTED:
        out(f"{run}: cancel requested; its tasks are cancelled, all_done tasks still run")
        _no_service_note(config, "only the process running the run can honour the request")
    elif outcome is CancelOutcome.ENDED:
        err(f"sluiceway: {run} already ended ({state}); nothing to cancel")
        return EXIT_FAILED
    else:
        err(f"sluiceway: {run} not found")
        return EXIT_FAILED
    return EXIT_OK
