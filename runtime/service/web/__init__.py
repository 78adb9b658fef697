"""The dashboard: server-rendered HTML pages (jinja2 templates) and the vendored CSS and
JavaScript they use, served by the service's HTTP server with no network and no build step."""
