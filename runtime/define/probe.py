"""Import flow files in a child process first: find the files that end or crash the process.

A flow file is Python, run at import. ``os._exit()`` there is caught in-process (the loader
raises instead, :class:`runtime.define.importing.ExitAtImport`), but a segfault in an extension,
``posix._exit``, a signal to itself or an import that never returns would end or wedge whatever
process imports it: ``sluiceway validate`` would print nothing and exit 0, the service would
vanish without a log line. So ``validate`` and the service import the files in a child process
first, one after the other, and report each file that ends the child, with its file, line,
exit code or signal; the process itself then imports only the others.

The child tells the parent on a private channel (its original stdout: what flow files print
goes to stderr) which file it starts and which it finished; a file started and not finished
when the child ended is the culprit, and a new child checks the files after it. An import
that takes longer than :data:`IMPORT_TIMEOUT` is stopped (faulthandler's timer dumps where it
hangs) and reported too.

The cost is a Python start-up plus a second import of every file (the child's), off the
caller's event loop (``bench/reload.py``); a file's import-time side effects happen twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.define.importing import import_flow_file, real_exit, shown_path

__all__ = ["IMPORT_TIMEOUT", "ProbeError", "probe_files"]

IMPORT_TIMEOUT = 60.0  # seconds one flow file may take to import before it counts as hung
# where `runtime` lives, for a child whose sys.path would not find it otherwise
_ROOT = str(Path(__file__).resolve().parent.parent)
_TIMED_OUT = re.compile(r"^Timeout \(\d+:\d\d:\d\d(\.\d+)?\)!$", re.MULTILINE)  # faulthandler's
_BOOT = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from runtime.define.probe import _child; _child(float(sys.argv[2]), sys.argv[3:])"
)


class ProbeError(Exception):
    """The child process could not check the files at all (it did not start one)."""


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What one child said: the files it started, in order, and those it finished."""

    started: list[str]
    finished: set[str]


def probe_files(files: Sequence[Path], *, timeout: float = IMPORT_TIMEOUT) -> dict[Path, str]:
    """Import each of *files* in a child process; the problem of each file whose import ended
    or crashed the child, or took longer than *timeout* seconds, as ``file:line: what``.

    Files that import, or raise at import, are not in the result: the caller's own import
    reports their problems.

    :raises ProbeError: when the child failed before it imported any file
    """
    problems: dict[Path, str] = {}
    todo = list(files)
    while todo:
        code, outcome, stderr = _run_child(todo, timeout)
        if code == 0 and len(outcome.finished) == len(todo):
            break
        culprit = next((p for p in reversed(outcome.started) if p not in outcome.finished), None)
        if culprit is None:
            tail = stderr.strip().splitlines()[-3:]
            raise ProbeError(
                f"the child process ({_how(code, timeout)}) imported no flow file"
                + (": " + " | ".join(tail) if tail else "")
            )
        path = next(p for p in todo if str(p) == culprit)
        problems[path] = _describe(path, code, stderr, timeout)
        todo = todo[todo.index(path) + 1 :]
    return problems


def _run_child(todo: Sequence[Path], timeout: float) -> tuple[int | None, _Outcome, str]:
    """Run one child over *todo*: its exit code (None when it was stopped for taking too
    long), what it said it started and finished, and its stderr."""
    command = [
        sys.executable,
        "-c",
        _BOOT,
        json.dumps([*sys.path, _ROOT]),
        repr(timeout),
        *(str(p) for p in todo),
    ]
    # a backstop over the child's own per-file timer (which a flow file could disarm)
    backstop = timeout * len(todo) + 30.0
    code: int | None
    try:
        done = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=backstop,
            check=False,
        )
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:  # killed by subprocess.run
        code, out, err = None, exc.stdout or b"", exc.stderr or b""
    return code, _parse(out.decode(errors="replace")), err.decode(errors="replace")


def _parse(text: str) -> _Outcome:
    started: list[str] = []
    finished: set[str] = set()
    for line in text.splitlines():
        what, _, arg = line.partition("\t")
        if what == "start":
            started.append(arg)
        elif what == "done":
            finished.add(arg)
    return _Outcome(started, finished)


def _describe(path: Path, code: int | None, stderr: str, timeout: float) -> str:
    line = _crash_line(path, stderr) or 1
    if code is None or (code == 1 and _TIMED_OUT.search(stderr)):
        what = f"its import did not finish within {timeout:g}s"
    elif code < 0:
        what = f"importing it crashes the process ({_how(code, timeout)})"
    else:
        what = f"importing it ends the process (exit code {code})"
    return f"{shown_path(path)}:{line}: {what}; found in a child process, so it is not imported"


def _how(code: int | None, timeout: float) -> str:
    if code is None:
        return f"stopped after {timeout:g}s per file"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _crash_line(path: Path, stderr: str) -> int | None:
    """The line of *path* in faulthandler's dump (most recent call first), if any."""
    target = os.path.realpath(path)
    for name, line in re.findall(r'File "([^"]+)", line (\d+)', stderr):
        if os.path.realpath(name) == target:
            return int(line)
    return None


# --- the child ---


def _child(timeout: float, paths: Sequence[str]) -> None:  # pragma: no cover - a child
    """Import *paths* one by one, saying on the original stdout which file starts and which
    finished; then end at once (no atexit handlers, no waiting for threads a file started)."""
    import faulthandler

    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # what the flow files print goes to stderr, away from the channel
    faulthandler.enable(file=sys.stderr)  # a crash dumps the file:line it happened at
    _die_with_parent()
    for path in paths:
        channel.write(f"start\t{path}\n")
        # a hung import: dump where it hangs (to stderr), then exit 1
        faulthandler.dump_traceback_later(timeout, exit=True, file=sys.stderr)
        import_flow_file(Path(path))
        faulthandler.cancel_dump_traceback_later()
        channel.write(f"done\t{path}\n")
    channel.flush()
    sys.stderr.flush()
    real_exit(0)  # not the os._exit guard of runtime.define.importing


def _die_with_parent() -> None:  # pragma: no cover - a child
    """Linux: the child gets SIGKILL when the process that started it ends."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
