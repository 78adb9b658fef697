"""The API's actions on runs and flows (POST only): cancel, retry, pause, unpause, backfill.
Their OpenAPI descriptions are in :mod:`runtime.service.api.action_docs`."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from runtime.define.flow import Flow
from runtime.define.triggers import load_zone
from runtime.engine.events import RunEnded
from runtime.errors import ParamError
from runtime.scheduling.backfill import (
    newest_runs,
    parse_bound,
    plan_backfill,
    queue_items,
    scheduled_instants,
    time_triggers,
)
from runtime.service.api.action_docs import (
    BACKFILL_DOC,
    CANCEL_DOC,
    PAUSE_DOC,
    RETRY_DOC,
    UNPAUSE_DOC,
)
from runtime.service.api.app import CONTEXT, READER, Route, read_json
from runtime.service.api.errors import HttpError, json_response
from runtime.service.api.logsearch import ROUTES as LOGSEARCH
from runtime.service.api.runs import check_key
from runtime.service.context import ServiceContext
from runtime.states import RunState
from runtime.store import queries
from runtime.store.cursors import set_paused
from runtime.store.incoming import Queued, run_objects
from runtime.store.requests import CancelOutcome, request_cancel, run_brief
from runtime.store.retries import queue_retry

log = logging.getLogger("sluiceway.runtime.api")

MAX_INSTANTS = 10_000  # scheduled instants one backfill request may cover
RERUN = ("none", "failed", "all")
QUEUED_CANCEL = "cancelled while queued"  # the run's error, as request_cancel stores it


def _run_id(request: web.Request) -> int:
    text = request.match_info["run_id"]
    if not text.isdigit() or int(text) < 1:
        raise HttpError(400, f"run id {text!r}: expected a positive whole number", field="run_id")
    return int(text)


def _flow(ctx: ServiceContext, name: str) -> Flow:
    flow = ctx.flows.get(name)
    if flow is None:
        known = ", ".join(sorted(ctx.flows)) or "none"
        raise HttpError(
            404, f"unknown flow {name!r} (loaded flows: {known})", code="unknown_flow", field="flow"
        )
    return flow


async def _body(request: web.Request, fields: frozenset[str]) -> dict[str, Any]:
    """The JSON object body (``{}`` when empty) with only *fields*.

    :raises HttpError: 400 naming ``body`` or the unknown field
    """
    body = await read_json(request, empty={})
    if not isinstance(body, dict):
        raise HttpError(400, "body must be a JSON object", field="body")
    unknown = sorted(body.keys() - fields)
    if unknown:
        known = ", ".join(sorted(fields)) or "none"
        raise HttpError(400, f"unknown field {unknown[0]!r} (fields: {known})", field=unknown[0])
    return body


# --- cancel ---


async def cancel_run(request: web.Request) -> web.Response:
    """Cancel a run: a queued one at once, a running one by the service within moments."""
    ctx = request.app[CONTEXT]
    run_id = _run_id(request)
    await _body(request, frozenset())
    now = ctx.clock.now()
    outcome, state = await request_cancel(ctx.store, run_id, now)
    if outcome is CancelOutcome.NOT_FOUND:
        raise HttpError(404, f"no run {run_id}", code="unknown_run", field="run_id")
    if outcome is CancelOutcome.CANCELLED:  # it never started: no engine says it ended
        brief = await request.app[READER](run_brief, run_id)
        if brief is not None:
            ended = RunEnded(now, run_id, brief["flow"], RunState.CANCELLED, QUEUED_CANCEL)
            ctx.runner.bus.publish(ended)
    if outcome is CancelOutcome.REQUESTED:
        ctx.wake_queue()  # its pass hands the request to the run now, not at the next poll
    if outcome is not CancelOutcome.ENDED:
        log.info("api: run=%s cancel %s", run_id, outcome.value)
    return json_response({"run_id": run_id, "outcome": outcome.value, "state": state})


# --- retry ---


async def retry_run(request: web.Request) -> web.Response:
    """Queue a retry of an ended run; 201 with the new run, 409 when it cannot be retried."""
    ctx = request.app[CONTEXT]
    run_id = _run_id(request)
    body = await _body(request, frozenset({"idempotency_key"}))
    key = check_key(body.get("idempotency_key"), "idempotency_key")

    def resolve(name: str, stored: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
        flow = ctx.flows.get(name)
        if flow is None:
            return None
        kept = {k: v for k, v in stored.items() if k in flow.params}
        return flow.resolve_params(kept), flow.source_hash()

    # a run that just ended here may have its end still queued in the writer: commit it
    # first, or the retry would be refused as "still running"
    await ctx.store.flush()
    outcome = await queue_retry(
        ctx.store, run_id, resolve=resolve, key=None if key is None else f"retry:{key}",
        now=ctx.clock.now(),
    )  # fmt: skip
    if outcome.refused == "not_found":
        raise HttpError(404, outcome.detail, code="unknown_run", field="run_id")
    if outcome.refused is not None or outcome.run_id is None:
        raise HttpError(409, outcome.detail, code="conflict", field="run_id")
    if outcome.created:
        ctx.wake_queue()
        log.info("api: run=%s flow=%s queued to retry run=%s", outcome.run_id, outcome.flow, run_id)
    (run,) = await run_objects(request.app[READER], [Queued(outcome.run_id, outcome.flow, True)])
    return json_response(run, status=201 if outcome.created else 200)


# --- pause, unpause ---


async def _set_paused(request: web.Request, paused: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    flow = _flow(ctx, request.match_info["flow"])
    await _body(request, frozenset())
    changed = await set_paused(ctx.store, flow.name, paused, ctx.clock.now())
    if changed and not paused:
        # its queued runs may start, and its missed instants follow its catch-up policy now
        ctx.wake_queue()
        ctx.wake_scheduler()
    if changed:
        log.info("api: flow=%s %s", flow.name, "paused" if paused else "unpaused")
    return json_response({"flow": flow.name, "paused": paused, "changed": changed})


async def pause_flow(request: web.Request) -> web.Response:
    """Pause a flow: no scheduled runs, queued runs wait."""
    return await _set_paused(request, True)


async def unpause_flow(request: web.Request) -> web.Response:
    """Unpause a flow: its catch-up policy decides what missed instants run."""
    return await _set_paused(request, False)


# --- backfill ---

BACKFILL_FIELDS = frozenset({"start", "end", "dry_run", "rerun"})


def _backfill_request(flow: Flow, body: dict[str, Any]) -> tuple[Any, Any, bool, str]:
    """(start, end, dry_run, rerun) of a backfill body; 400 naming the field at fault."""
    zone = load_zone(flow.tz)
    bounds = []
    for name in ("start", "end"):
        value = body.get(name)
        if not isinstance(value, str) or not value:
            raise HttpError(400, f"{name} is required: a date or ISO 8601 date-time", field=name)
        try:
            bounds.append(parse_bound(value, name, zone, end=name == "end"))
        except ParamError as exc:
            raise HttpError(400, str(exc), field=name) from None
    if bounds[0] >= bounds[1]:
        raise HttpError(400, f"start {body['start']!r} is after end {body['end']!r}", field="end")
    dry_run = body.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise HttpError(400, "dry_run must be true or false", field="dry_run")
    rerun = body.get("rerun", "none")
    if rerun not in RERUN:
        raise HttpError(400, f"rerun must be one of {', '.join(RERUN)}", field="rerun")
    return bounds[0], bounds[1], dry_run, rerun


def _item_json(item: Any) -> dict[str, Any]:
    run = item.run
    return {
        "logical_date": item.instant.isoformat().replace("+00:00", "Z"),
        "action": item.action,
        "schedule": item.schedule,
        "run": None if run is None else {"id": run["id"], "state": run["state"]},
    }


async def backfill(request: web.Request) -> web.Response:
    """A run for every scheduled instant of a range (or, dry, what would be done)."""
    ctx = request.app[CONTEXT]
    flow = _flow(ctx, request.match_info["flow"])
    body = await _body(request, BACKFILL_FIELDS)
    specs = time_triggers(flow)
    if not specs:
        raise HttpError(
            400, f"flow {flow.name!r} has no time triggers (cron or every) to backfill",
            field="flow", code="no_schedule",
        )  # fmt: skip
    start, end, dry_run, rerun = _backfill_request(flow, body)
    instants = scheduled_instants(specs, start, end, limit=MAX_INSTANTS)
    if len(instants) > MAX_INSTANTS:
        raise HttpError(
            400, f"the range holds more than {MAX_INSTANTS} scheduled instants; backfill it "
            "in parts", field="end",
        )  # fmt: skip
    items = plan_backfill(instants, await ctx.store.read(newest_runs, flow.name, instants), rerun)
    if dry_run:
        return json_response({"flow": flow.name, "runs": [_item_json(i) for i in items]})
    todo = [item for item in items if item.action != "skip"]
    made = await queue_items(ctx.store, flow, todo, ctx.clock.now(), via="api") if todo else []
    created = [run_id for _, run_id, new in made if new]
    if created:
        ctx.wake_queue()
        log.info("api: flow=%s backfill queued %d run(s)", flow.name, len(created))
    runs = await request.app[READER](queries.runs_by_id, [run_id for _, run_id, _ in made])
    for run, (item, _, new) in zip(runs, made, strict=True):
        run["action"] = item.action if new else "skip"
    skipped = len(items) - len(created)
    return json_response(
        {"flow": flow.name, "runs": runs, "skipped": skipped}, status=201 if created else 200
    )


# this part's routes: the actions, and the log search (one entry in the route table)
ROUTES: tuple[Route, ...] = (
    *LOGSEARCH,
    Route("POST", "/api/runs/{run_id}/cancel", cancel_run, "cancel_run", "cancel a run",
          doc=CANCEL_DOC),
    Route("POST", "/api/runs/{run_id}/retry", retry_run, "retry_run",
          "retry an ended run's failed tasks", doc=RETRY_DOC),
    Route("POST", "/api/flows/{flow}/pause", pause_flow, "pause_flow", "pause a flow",
          doc=PAUSE_DOC),
    Route("POST", "/api/flows/{flow}/unpause", unpause_flow, "unpause_flow", "unpause a flow",
          doc=UNPAUSE_DOC),
    Route("POST", "/api/flows/{flow}/backfill", backfill, "backfill",
          "a run for every scheduled instant of a range (or a dry run)", doc=BACKFILL_DOC),
)  # fmt: skip
