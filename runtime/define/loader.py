"""Loads flow files from a folder: every problem of every file at once, and one broken file
never stops the others."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from runtime.define import flow as flow_module
from runtime.define.flow import Flow

_MODULE_PREFIX = "sluiceway_flows"
_importing = threading.RLock()  # a flow file may load flows itself


@dataclass(slots=True)
class LoadedFlows:
    """What a flows folder holds.

    :ivar flows: the flows that can run, by name
    :ivar problems: every problem found, each ``file:line: what is wrong``
    :ivar broken: names of flows that were found but cannot run
    :ivar files: which flows each file defined
    """

    folder: Path
    flows: dict[str, Flow] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    broken: set[str] = field(default_factory=set)
    files: dict[Path, list[str]] = field(default_factory=dict)


def _rel(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


def _module_name(path: Path) -> str:
    return f"{_MODULE_PREFIX}.{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"


def flow_files(folder: Path) -> list[Path]:
    """The flow files of *folder*: ``*.py`` not starting with ``_`` or ``.``, sorted."""
    return sorted(
        p for p in folder.glob("*.py") if not p.name.startswith(("_", ".")) and p.is_file()
    )


class ExitAtImport(SystemExit):
    """``os._exit()`` was called by a flow file's import: raised instead, so the file is
    reported like any other that fails to import and the process goes on."""


# the real os._exit, also when this module is imported again after replacing it
_real_exit: Callable[[int], NoReturn] = getattr(os, "_sluiceway_real_exit", os._exit)
setattr(os, "_sluiceway_real_exit", _real_exit)  # noqa: B010 - not an attribute os declares
_exit_guard = threading.local()  # .pid: set while this thread imports a flow file


def _guarded_exit(status: int) -> NoReturn:
    # only the thread importing a flow file, and not a process forked from it, is guarded
    if getattr(_exit_guard, "pid", None) == os.getpid():
        raise ExitAtImport(status)
    _real_exit(status)


def import_flow_file(path: Path) -> tuple[list[Flow], str | None]:
    """Import one flow file and return the flows it made, or the import problem.

    ``os._exit()`` called while the file imports (in this thread) raises
    :class:`ExitAtImport` instead of ending the process; what a child process can only
    find out by ending (a crash, ``posix._exit``, a signal) is :mod:`runtime.define.probe`'s job.
    """
    os._exit = _guarded_exit  # transparent outside an import, so it stays
    name = _module_name(path)
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
            return [], f"{_rel(path)}:1: cannot be imported as a Python module"
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
            detail += f" ({_rel(Path(exc.filename))}:{exc.lineno})"
    elif context:
        detail += "\n" + context
    return f"{_rel(path)}:{line}: {detail}"


def load_flows(
    folder: str | Path, pools: Iterable[str] | None = None, *, isolate: bool = False
) -> LoadedFlows:
    """Import every flow file in *folder* and check every flow.

    :param pools: the configured pool names; tasks naming another pool are problems
    :param isolate: import the files in a child process first (:mod:`runtime.define.probe`); a file
        that ends or crashes it is a problem and is not imported here
    """
    folder = Path(folder)
    loaded = LoadedFlows(folder)
    if not folder.is_dir():
        loaded.problems.append(f"{_rel(folder)}: flows folder not found")
        return loaded
    files = flow_files(folder)
    fatal: dict[Path, str] = {}
    if isolate and files:
        from runtime.define.probe import ProbeError, probe_files

        try:
            fatal = probe_files(files)
        except (ProbeError, OSError) as exc:  # the check itself failed: import as before
            loaded.problems.append(f"{_rel(folder)}: flow files not checked in a child: {exc}")
    with _importing:  # one import at a time: the collector and sys.path are process-wide
        before = set(sys.modules)
        try:
            _load_files(loaded, None if pools is None else set(pools), files, fatal)
        finally:
            _forget_helpers(folder, before)
    for name in loaded.broken:
        loaded.flows.pop(name, None)
    return loaded


async def load_flows_off_loop(
    folder: str | Path, pools: Iterable[str] | None = None
) -> LoadedFlows:
    """:func:`load_flows` with ``isolate=True``, in a daemon thread: the event loop goes on
    while the files are checked and imported (a slow import stalls nothing), and a cancel
    returns at once (the thread is left to finish; it never keeps the process alive).

    :raises RuntimeError: when the load raised (a ``BaseException`` from a flow file's import
        that is not an ``Exception`` arrives as one, never as itself)
    """
    import anyio
    import anyio.from_thread
    import anyio.lowlevel

    done = anyio.Event()
    token = anyio.lowlevel.current_token()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["loaded"] = load_flows(folder, pools, isolate=True)
        except BaseException as exc:  # noqa: BLE001 - handed to the loop below
            outcome["error"] = exc
        with contextlib.suppress(Exception):  # the loop has ended: nobody waits any more
            anyio.from_thread.run_sync(done.set, token=token)

    threading.Thread(target=work, name="sluiceway flow import", daemon=True).start()
    await done.wait()
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, Exception):
            raise error
        raise RuntimeError(f"loading the flows raised {error!r}") from error
    loaded: LoadedFlows = outcome["loaded"]
    return loaded


def _forget_helpers(folder: Path, before: set[str]) -> None:
    """Drop the helper modules the flow files imported from *folder*, so that the next load
    runs their current code, even from another folder with a helper of the same name."""
    prefix = str(folder.resolve()) + os.sep
    for name in set(sys.modules) - before:
        if name.startswith(_MODULE_PREFIX + "."):
            continue  # the flow files themselves stay importable by name
        file = getattr(sys.modules[name], "__file__", None)
        if file and os.path.abspath(file).startswith(prefix):
            del sys.modules[name]


def _load_files(
    loaded: LoadedFlows,
    pool_names: set[str] | None,
    files: Iterable[Path],
    fatal: dict[Path, str],
) -> None:
    seen: dict[str, Flow] = {}
    for path in files:
        if path in fatal:  # it would end this process: not imported, its flows not loaded
            loaded.files[path] = []
            loaded.problems.append(fatal[path])
            continue
        flows, problem = import_flow_file(path)
        loaded.files[path] = [f.name for f in flows]
        if problem:
            loaded.problems.append(problem)
            continue
        if not flows:
            loaded.problems.append(f"{_rel(path)}:1: defines no Flow")
        for flow in flows:
            if flow.name in seen:
                loaded.problems.append(
                    f"{flow.where}: flow name {flow.name!r} is already used at "
                    f"{seen[flow.name].where}"
                )
                loaded.broken.add(flow.name)
                continue
            seen[flow.name] = flow
            problems = flow.problems(pool_names)
            if problems:
                loaded.problems.extend(problems)
                loaded.broken.add(flow.name)
            else:
                loaded.flows[flow.name] = flow
