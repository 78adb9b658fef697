"""The route table: every route the service's HTTP server serves, in one place. Each part of
the server keeps its routes next to its handlers and is added here; the OpenAPI document is
generated from this table."""

from __future__ import annotations

from runtime.service.api.actions import ROUTES as ACTIONS
from runtime.service.api.app import Route
from runtime.service.api.browse import ROUTES as BROWSE
from runtime.service.api.events import SEND_EVENT_DOC, send_event
from runtime.service.api.health import ROUTES as HEALTH
from runtime.service.api.login import ROUTES as LOGIN
from runtime.service.api.monitoring import ROUTES as MONITORING
from runtime.service.api.runs import CREATE_RUN_DOC, create_run
from runtime.service.api.stream import ROUTES as STREAM
from runtime.service.web.pages import ROUTES as PAGES
from runtime.service.web.static import ROUTES as STATIC

TRIGGERS: tuple[Route, ...] = (
    Route(
        "POST",
        "/api/flows/{flow}/runs",
        create_run,
        "create_run",
        "queue a run of a flow (params, idempotency_key)",
        doc=CREATE_RUN_DOC,
    ),
    Route(
        "POST",
        "/api/events/{name}",
        send_event,
        "send_event",
        "send an event: a run of every flow with on_event(name)",
        doc=SEND_EVENT_DOC,
    ),
)

ROUTES: tuple[Route, ...] = (
    *HEALTH,
    *TRIGGERS,
    *BROWSE,
    *STATIC,
    *MONITORING,
    *PAGES,
    *LOGIN,
    *STREAM,
    *ACTIONS,
)
