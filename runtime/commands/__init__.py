"""Handlers of the service's CLI commands, imported only when their command runs."""
