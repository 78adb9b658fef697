"""``GET /metrics`` (Prometheus) and ``GET /api/openapi.json`` (the API described)."""

from __future__ import annotations

import orjson
from aiohttp import web

from runtime.service.api.app import CONTEXT, READER, Route
from runtime.service.api.openapi import build_document, error_response, json_body
from runtime.service.metrics.hub import ServiceMetrics, package_version

METRICS = web.AppKey("metrics", ServiceMetrics)
ROUTE_TABLE = web.AppKey("route_table", tuple)  # the routes the app serves (Route objects)


async def serve_metrics(request: web.Request) -> web.Response:
    """Every ``sluiceway_*`` series, in the text format the scraper's ``Accept`` asks for."""
    metrics = request.app[METRICS]
    accept = request.headers.get("Accept")
    body, content_type = await metrics.scrape(request.app[READER], accept)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def serve_openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document of the routes this server serves (built per request: about
    a millisecond, and never stale)."""
    routes = request.app[ROUTE_TABLE]
    server = request.app[CONTEXT].config.api.public_url
    document = build_document(routes, version=package_version(), server=server)
    return web.Response(
        body=orjson.dumps(document),
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


METRICS_DOC = {
    "tags": ["monitoring"],
    "description": (
        "Prometheus text format (OpenMetrics when the Accept header asks for it). Needs the "
        "bearer token like every route but the health checks: in prometheus.yml, "
        "`authorization: {credentials_file: /etc/prometheus/sluiceway.token}`. However often "
        "it is scraped, the store's live counts are read at most every 2 s and the ended "
        "runs' totals (a scan of the history) at most every 60 s."
    ),
    "responses": {
        "200": {
            "description": "every sluiceway_* series",
            "content": {
                "text/plain; version=0.0.4": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        },
        "503": error_response("the store cannot be read right now"),
    },
}

OPENAPI_DOC = {
    "tags": ["monitoring"],
    "description": "Generated from the route table: every route the server serves.",
    "responses": {
        "200": json_body(
            {
                "type": "object",
                "required": ["openapi", "info", "paths"],
                "properties": {
                    "openapi": {"type": "string", "const": "3.1.0"},
                    "info": {"type": "object"},
                    "paths": {"type": "object"},
                    "components": {"type": "object"},
                },
            },
            "the OpenAPI 3.1 document",
        )
    },
}

ROUTES: tuple[Route, ...] = (
    Route(
        "GET",
        "/metrics",
        serve_metrics,
        "metrics",
        "Prometheus metrics: runs, attempts, durations, queue, pools, alerts, triggers, lag",
        doc=METRICS_DOC,
    ),
    Route(
        "GET",
        "/api/openapi.json",
        serve_openapi,
        "openapi",
        "this API described as an OpenAPI 3.1 document",
        doc=OPENAPI_DOC,
    ),
)
