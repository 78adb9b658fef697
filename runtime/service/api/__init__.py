"""The service's HTTP API: settings and the listening socket (listen), the aiohttp
application (app), its route table (routes) and handlers (runs, events), one error shape
(errors), and the feeder that serves it (server)."""
