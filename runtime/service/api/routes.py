"""The route table: every route the service's HTTP server serves, in one place. Each part of
the server keeps its routes next to its handlers and is added here; the OpenAPI document is
generated from this table."""

from __future__ import annotations

from runtime.service.api.actions import ROUTES as ACTIONS
from runtime.service.api.app import Route
from runtime.service.api.events import send_event
from runtime.service.api.health import ROUTES as HEALTH
from runtime.service.api.runs import create_run
from runtime.service.web.static import ROUTES as STATIC

TRIGGERS: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/flows/{flow}/runs",
        create_run,
        "create_run",
        "queue a run of a flow (params, idempotency_key)",
    ),
    Route(
        "POST",
        "/api/events/{name}",
        send_event,
        "send_event",
        "send an event: a run of every flow with on_event(name)",
    ),
)

ROUTES: tuple[Route, ...] = (
    *HEALTH,
    *TRIGGERS,
    *STATIC,
    *ACTIONS,
)
