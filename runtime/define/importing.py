"""Imports one flow file: the flows it makes, or the problem that stops it, with its line;
``os._exit()`` called by the file's import raises instead of ending the process.

Both the loader (in this process) and the probe (in a child process) import flow files
through here, so neither imports the other's internals.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from runtime.define import flow as flow_module
from runtime.define.flow import Flow

__all__ = [
    "ExitAtImport",
    "import_flow_file",
    "is_flow_module",
    "module_name",
    "real_exit",
    "shown_path",
]

_MODULE_PREFIX = "sluiceway_flows"


def shown_path(path: Path) -> str:
    """*path* relative to the working directory when it is below it, else as given."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def module_name(path: Path) -> str:
    """The name a flow file is imported under, below the ``sluiceway_flows`` package."""
    return f"{_MODULE_PREFIX}.{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"


def is_flow_module(name: str) -> bool:
    """Whether the module called *name* is a flow file imported by :func:`import_flow_file`."""
    return name.startswith(_MODULE_PREFIX + ".")


class ExitAtImport(SystemExit):
    """``os._exit()`` was called by a flow file's import: raised instead, so the file is
    reported like any other that fails to import and the process goes on."""


# the real os._exit, also when this module is imported again after replacing it
real_exit: Callable[[int], NoReturn] = getattr(os, "_sluiceway_real_exit", os._exit)
setattr(os, "_sluiceway_real_exit", real_exit)  # noqa: B010 - not an attribute os declares
_exit_guard = threading.local()  # .pid: set while this thread imports a flow file


def _guarded_exit(status: int) -> NoReturn:
    # only the thread importing a flow file, and not a process forked from it, is guarded
    if getattr(_exit_guard, "pid", None) == os.getpid():
        raise ExitAtImport(status)
    real_exit(status)


def import_flow_file(path: Path) -> tuple[list[Flow], str | None]:
    """Import one flow file and return the flows it made, or the import problem.

    ``os._exit()`` called while the file imports (in this thread) raises
    :class:`ExitAtImport` instead of ending the process; what a child process can only
    find out by ending (a crash, ``posix._exit``, a signal) is :mod:`runtime.define.probe`'s job.
    """
    os._exit = _guarded_exit  # transparent outside an import, so it stays
    name = module_name(path)
    sys.modules.pop(name, None)
    if _MODULE_PREFIX not in sys.modules:
        # a parent package, so objects defined in flow files pickle by reference
        package = ModuleType(_MODULE_PREFIX)
        package.__path__ = []
        sys.modules[_MODULE_PREFIX] = package
    collected: list[Flow] = []
    previous = flow_module._collector
    flow_module._collector = collected
    folder = str(path.parent.resolve())
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # flow files may import helpers beside them
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            return [], f"{shown_path(path)}:1: cannot be imported as a Python module"
        module: ModuleType = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            _exit_guard.pid = os.getpid()
            spec.loader.exec_module(module)
        except BaseException as exc:
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            return [], _import_problem(path, exc)
    finally:
        _exit_guard.pid = None
        flow_module._collector = previous
        if added:
            sys.path.remove(folder)
    return collected, None


def _import_problem(path: Path, exc: BaseException) -> str:
    line = 1
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename) == path:
        line = exc.lineno or 1
    else:
        for frame in traceback.extract_tb(exc.__traceback__):
            if Path(frame.filename).resolve() == path.resolve():
                line = frame.lineno or line
    tail = traceback.format_exception_only(exc)[-1].strip()
    if isinstance(exc, ExitAtImport):
        tail = f"it calls os._exit({exc.code}), which would end the process"
    # the importer's own frames (this module, <frozen importlib...>) say nothing to the user
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f.filename != __file__ and not f.filename.startswith("<frozen ")
    ]
    context = "".join(traceback.format_list(frames[-2:])).rstrip()
    detail = f"cannot import: {tail}"
    if isinstance(exc, SyntaxError):
        if exc.filename and Path(exc.filename) != path:  # in a helper the file imports
            detail += f" ({shown_path(Path(exc.filename))}:{exc.lineno})"
    elif context:
        detail += "\n" + context
    return f"{shown_path(path)}:{line}: {detail}"
