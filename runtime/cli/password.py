"""CLI: hash-password (the line of ``[api] password_hash`` for the dashboard's login)."""

from __future__ import annotations

import argparse
import getpass
import sys

from runtime.cli.output import EXIT_OK, EXIT_USAGE, err, out
from runtime.config import Config

MAX_PASSWORD = 1024  # the login form refuses longer secrets


def cmd_hash_password(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway hash-password``: read a password (asked twice on a terminal, else the
    first line of stdin; never from the command line, where ``ps`` and shell history would
    show it) and print the ``password_hash = "..."`` line for ``[api]``."""
    from runtime.service.api.passwords import hash_password

    password = _ask() if sys.stdin.isatty() else _first_line()
    if password is None:
        return EXIT_USAGE
    if not password:
        err("sluiceway: hash-password: the password is empty")
        return EXIT_USAGE
    if len(password) > MAX_PASSWORD:
        err(f"sluiceway: hash-password: the password is longer than {MAX_PASSWORD} characters")
        return EXIT_USAGE
    if len(password) < 8:
        err("warning: a password shorter than 8 characters is easy to guess")
    err("put this line under [api] in sluiceway.toml (or set SLUICEWAY_API_PASSWORD_HASH):")
    out(f'password_hash = "{hash_password(password)}"')
    return EXIT_OK


def _ask() -> str | None:
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        err("sluiceway: hash-password: the passwords differ")
        return None
    return first


def _first_line() -> str:
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
