"""CLI: trigger, cancel, backfill."""

from __future__ import annotations

import argparse

from runtime.config import Config


def cmd_trigger(args: argparse.Namespace, config: Config) -> int:
    raise NotImplementedError("trigger")


def cmd_cancel(args: argparse.Namespace, config: Config) -> int:
    raise NotImplementedError("cancel")


def cmd_backfill(args: argparse.Namespace, config: Config) -> int:
    raise NotImplementedError("backfill")
