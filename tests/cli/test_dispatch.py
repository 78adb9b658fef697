"""Every command the parser knows has a handler, and every handler imports."""

from __future__ import annotations

import argparse

import pytest

from runtime.cli.main import COMMANDS, build_parser, handler


def _commands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_every_command_has_a_handler() -> None:
    assert _commands() == set(COMMANDS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_handlers_import(command: str) -> None:
    assert callable(handler(command))
