"""Plugins: things that talk to the outside world, found through the `sluiceway.plugins` entry-point group."""

from __future__ import annotations
