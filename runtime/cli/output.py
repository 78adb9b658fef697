"""What every command shares: exit codes, stdout/stderr lines, loading a flow, ``--param``."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.config import Config
from runtime.errors import ParamError, UnknownFlowError

if TYPE_CHECKING:
    from runtime.define.flow import Flow

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED = 0, 1, 2, 130

# the command that runs this CLI in a child process (tests, benchmarks): the installed
# console script beside the interpreter, else the module
_SCRIPT = Path(sys.executable).parent / "sluiceway"
SLUICEWAY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "runtime.cli"]


def out(text: str = "") -> None:
    """A line of the command's result, on stdout."""
    sys.stdout.write(text + "\n")


def err(text: str) -> None:
    """A line of progress, a warning or an error, on stderr (flushed: it may precede a wait)."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


# --- flows ---


def load_flow(config: Config, name: str) -> Flow:
    """Flow *name* from the configured flows folder; the other files' problems are warnings.

    :raises FlowValidationError: when the flow's own file or definition is broken
    :raises UnknownFlowError: when no file defines it (the folder's problems are printed)
    """
    from runtime.define.loader import load_flows
    from runtime.errors import FlowValidationError

    loaded = load_flows(config.flows, config.pools, executors=config.executors)
    if name in loaded.broken:
        own = [p for p in loaded.problems if repr(name) in p] or loaded.problems
        raise FlowValidationError(f"flow {name!r}", own)
    if name not in loaded.flows:
        if loaded.problems:
            for problem in loaded.problems:
                err(problem)
        raise UnknownFlowError(name, list(loaded.flows))
    for problem in loaded.problems:
        err(f"warning: {problem}")
    return loaded.flows[name]


def valid_flow(config: Config, name: str) -> Flow | None:
    """The named flow, validated; ``None`` after printing its problems."""
    from runtime.errors import FlowValidationError

    try:
        flow = load_flow(config, name)
        flow.validate(config.pools, config.executors)
    except FlowValidationError as exc:
        for problem in exc.problems:
            err(problem)
        return None
    return flow


# --- --param ---


def parse_params(pairs: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """``k=v`` pairs, each converted to the type of the param's default."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ParamError(f"--param {pair!r}: expected KEY=VALUE")
        out[key] = _coerce(key, text, defaults.get(key))
    return out


def _coerce(key: str, text: str, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
        if isinstance(default, list | dict):
            value = _json(text)
            if not isinstance(value, type(default)):
                raise ValueError(f"expected a JSON {type(default).__name__}")
            return value
        if default is None:
            try:
                return _json(text)
            except ValueError:
                return text
    except ValueError as exc:
        raise ParamError(f"--param {key}={text!r}: {exc}") from None
    return text


def _json(text: str) -> Any:
    """JSON as written: a long integer stays an integer (orjson would read a float); NaN and
    Infinity are not JSON."""
    import json

    def refuse(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    def number(token: str) -> float:
        value = float(token)
        if value - value != 0.0:
            raise ValueError(f"{token} is out of range")
        return value

    return json.loads(text, parse_constant=refuse, parse_float=number)
