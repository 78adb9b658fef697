"""Trigger-source plugins: turn the outside world into queued runs."""
