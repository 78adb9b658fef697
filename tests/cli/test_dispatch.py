"""Every command the parser knows has a handler, and lazy handlers import."""

from __future__ import annotations

import argparse

import pytest

from runtime.cli.main import _COMMANDS, _LAZY, _lazy, build_parser


def _commands() -> set[str]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_every_command_has_exactly_one_handler() -> None:
    assert _commands() == set(_COMMANDS) | set(_LAZY)
    assert not set(_COMMANDS) & set(_LAZY)


@pytest.mark.parametrize("command", sorted(_LAZY))
def test_lazy_handlers_import(command: str) -> None:
    assert callable(_lazy(_LAZY[command], f"cmd_{command}"))
