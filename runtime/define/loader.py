"""Loads flow files from a folder: every problem of every file at once, and one broken file
never stops the others."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.define.crossflow import cross_flow_problems
from runtime.define.flow import Flow
from runtime.define.importing import import_flow_file, is_flow_module, shown_path
from runtime.define.probe import ProbeError, probe_files

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


def flow_files(folder: Path) -> list[Path]:
    """The flow files of *folder*: ``*.py`` not starting with ``_`` or ``.``, sorted."""
    return sorted(
        p for p in folder.glob("*.py") if not p.name.startswith(("_", ".")) and p.is_file()
    )


def load_flows(
    folder: str | Path,
    pools: Iterable[str] | None = None,
    *,
    isolate: bool = False,
    executors: Iterable[str] | None = None,
) -> LoadedFlows:
    """Import every flow file in *folder* and check every flow.

    :param pools: the configured pool names; tasks naming another pool are problems
    :param executors: the configured executor names; tasks naming another are problems
    :param isolate: import the files in a child process first (:mod:`runtime.define.probe`); a file
        that ends or crashes it is a problem and is not imported here
    """
    folder = Path(folder)
    loaded = LoadedFlows(folder)
    if not folder.is_dir():
        loaded.problems.append(f"{shown_path(folder)}: flows folder not found")
        return loaded
    files = flow_files(folder)
    fatal: dict[Path, str] = {}
    if isolate and files:
        try:
            fatal = probe_files(files)
        except (ProbeError, OSError) as exc:  # the check itself failed: import as before
            loaded.problems.append(
                f"{shown_path(folder)}: flow files not checked in a child: {exc}"
            )
    with _importing:  # one import at a time: the collector and sys.path are process-wide
        before = set(sys.modules)
        try:
            names = (
                None if pools is None else set(pools),
                None if executors is None else set(executors),
            )
            found, complete = _load_files(loaded, names, files, fatal)
        finally:
            _forget_helpers(folder, before)
    # across files: on_flow triggers naming flows and tasks that exist, and no cycle of them
    for name, problems in cross_flow_problems(found, complete=complete).items():
        loaded.problems.extend(problems)
        loaded.broken.add(name)
    for name in loaded.broken:
        loaded.flows.pop(name, None)
    return loaded


async def load_flows_off_loop(
    folder: str | Path,
    pools: Iterable[str] | None = None,
    executors: Iterable[str] | None = None,
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
            outcome["loaded"] = load_flows(folder, pools, isolate=True, executors=executors)
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
        if is_flow_module(name):
            continue  # the flow files themselves stay importable by name
        file = getattr(sys.modules[name], "__file__", None)
        if file and os.path.abspath(file).startswith(prefix):
            del sys.modules[name]


def _load_files(
    loaded: LoadedFlows,
    names: tuple[set[str] | None, set[str] | None],
    files: Iterable[Path],
    fatal: dict[Path, str],
) -> tuple[dict[str, Flow], bool]:
    """Import *files* into *loaded*; every flow found (broken ones too) by name, and whether
    every file imported (else a flow named elsewhere may be in one that did not)."""
    seen: dict[str, Flow] = {}
    complete = True
    for path in files:
        if path in fatal:  # it would end this process: not imported, its flows not loaded
            loaded.files[path] = []
            loaded.problems.append(fatal[path])
            complete = False
            continue
        flows, problem = import_flow_file(path)
        loaded.files[path] = [f.name for f in flows]
        if problem:
            loaded.problems.append(problem)
            complete = False
            continue
        if not flows:
            loaded.problems.append(f"{shown_path(path)}:1: defines no Flow")
        for flow in flows:
            if flow.name in seen:
                loaded.problems.append(
                    f"{flow.where}: flow name {flow.name!r} is already used at "
                    f"{seen[flow.name].where}"
                )
                loaded.broken.add(flow.name)
                continue
            seen[flow.name] = flow
            problems = flow.problems(*names)  # the configured pools and executors
            if problems:
                loaded.problems.extend(problems)
                loaded.broken.add(flow.name)
            else:
                loaded.flows[flow.name] = flow
    return seen, complete
