"""Running ``sluiceway`` in tests, and waiting for what it does.

- As a user runs it: :func:`sluiceway` (a command to its end) and :func:`spawn` (in the
  background), the console script of this environment in a clean environment (no
  ``SLUICEWAY_*``, none of systemd's variables).
- In process: :func:`main_output`, with the ``cli_env`` fixture (tests/conftest.py), for
  the faster tests of ``main([...])`` whose output pytest captures.

Commands and waits have the generous deadline of tests.waiting.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from runtime.cli.main import main
from tests.waiting import WAIT

_SCRIPT = Path(sys.executable).parent / "sluiceway"
SLUICEWAY = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "runtime.cli.main"]
"""The command line of ``sluiceway``: the console script, else ``python -m``."""

# systemd's variables: a test run under systemd (or from a service's shell) must not leak them
_SYSTEMD = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS")

Wrap = Callable[[list[str]], list[str]]
"""Turns a command line into another: ``sudo -u nobody ...``, ``unshare ...``."""


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without SLUICEWAY_* and systemd's variables, plus *extra*."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_") and k not in _SYSTEMD
    }
    env.update(extra)
    return env


def sluiceway(
    *args: str,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = WAIT,
    wrap: Wrap = list,
) -> subprocess.CompletedProcess[str]:
    """Run ``sluiceway ARGS`` in *cwd* to its end: stdin closed, stdout and stderr captured
    as text, the environment :func:`clean_env` plus *env*."""
    return subprocess.run(
        wrap([*SLUICEWAY, *args]),
        cwd=cwd,
        env=clean_env(**(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn(
    *args: str, cwd: Path, stderr: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``sluiceway ARGS`` in the background in *cwd*; its stderr goes to the file
    *stderr*, stdout nowhere. Stop it with :func:`killed_at_exit` or the test's own wait."""
    with stderr.open("wb") as err:
        return subprocess.Popen(
            [*SLUICEWAY, *args],
            cwd=cwd,
            env=clean_env(**(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


@contextmanager
def killed_at_exit(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """*proc*, killed when the block ends if it still runs (the test failed, most likely)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=WAIT)


# --- in process (the cli_env fixture, in tests/conftest.py, sets the scene) ---

CLI_LOGGERS = ("sluiceway", "sluiceway.runtime", "sluiceway.task")
"""The loggers ``main`` sets up, restored after each in-process test."""


def main_output(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``main(ARGS)`` in process: (exit code, stdout, stderr) of this call only."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err
