"""Executor plugins: where task bodies run when not in the service's own process."""
