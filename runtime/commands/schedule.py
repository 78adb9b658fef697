"""CLI: serve, next, pause, unpause."""

from __future__ import annotations

import argparse

from runtime.config import Config


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway serve [--dry-run]``."""
    from runtime.service import serve

    if args.dry_run:
        raise NotImplementedError("serve --dry-run")
    return serve(config)


def cmd_next(args: argparse.Namespace, config: Config) -> int:
    raise NotImplementedError("next")


def cmd_pause(args: argparse.Namespace, config: Config) -> int:
    raise NotImplementedError("pause")


def cmd_unpause(args: argparse.Namespace, config: Config) -> int:
    raise NotImplementedError("unpause")
