"""``/metrics``: what the service counts from the event bus (recorder), what it reads at a
scrape from the store, the limits and the trigger sources (collector), and the registry that
serves both with the event loop's lag (hub)."""
