"""Reload: the flows folder is watched and reloaded on change or SIGHUP; a file that stops
loading keeps its last good flows, and so does every file while the folder is away."""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from pathlib import Path

import anyio
from anyio.abc import TaskStatus

from runtime.define.flow import Flow
from runtime.define.loader import LoadedFlows, load_flows_off_loop
from runtime.engine.runner import Runner
from runtime.service.context import ServiceContext
from runtime.store import requests

log = logging.getLogger("sluiceway.runtime.service")


class Reloader:
    """Loads the flows folder again and swaps the result into ``ctx.flows``."""

    def __init__(self, ctx: ServiceContext, files: dict[Path, list[str]]) -> None:
        self.ctx = ctx
        self.files = files  # flow names per file, from the last good load of each file
        self.folder_missing = False  # the flows folder is away; the loaded flows stay
        self.lock = anyio.Lock()
        self.snapshot: dict[str, int] | None = None  # the folder's mtimes as last loaded

    async def reload(self) -> None:
        """Reload the flows folder. A file that no longer loads keeps its last good flows,
        and so does every file while the folder is missing (a deploy that swaps the folder
        by rename must not unload the flows for a moment: their schedules would skip).

        The files are imported off the event loop, so runs, the scheduler and the writer go
        on during a slow import; a child process imports them first, so a file that would end
        or crash the service is reported and not imported (:mod:`runtime.define.probe`).
        """
        async with self.lock:  # one at a time, applied in the order they loaded
            config = self.ctx.config
            if not config.flows.is_dir():
                self._say_folder_missing()
                return
            try:
                loaded = await load_flows_off_loop(config.flows, config.pools, config.executors)
            except Exception:
                log.exception("reload failed; the flows stay as they were")
                return
            if not config.flows.is_dir():  # gone while loading: what was read may be partial
                self._say_folder_missing()
                return
            self._apply(loaded)

    def _apply(self, loaded: LoadedFlows) -> None:
        ctx = self.ctx
        flows = dict(loaded.flows)
        for path, names in loaded.files.items():
            if names or path not in self.files:
                continue
            for name in self.files[path]:  # the file failed to import: keep its last version
                if name in ctx.flows:
                    flows.setdefault(name, ctx.flows[name])
        for name in loaded.broken:
            if name in ctx.flows:
                flows[name] = ctx.flows[name]
        for problem in loaded.problems:
            log.error("reload: %s (the last good version stays)", problem)
            if ctx.alerts is not None:
                ctx.alerts.service_event("trigger.error", f"reload: {problem}")
        for path, names in loaded.files.items():
            if names:
                self.files[path] = names
        for path in set(self.files) - set(loaded.files):
            del self.files[path]  # removed file: its flows go
        added = sorted(set(flows) - set(ctx.flows))
        removed = sorted(set(ctx.flows) - set(flows))
        changed = sorted(
            n
            for n in set(flows) & set(ctx.flows)
            if flows[n].source_hash() != ctx.flows[n].source_hash()
        )
        log.info(
            "reloaded flows: %d loaded, added %s, changed %s, removed %s",
            len(flows),
            added or "none",
            changed or "none",
            removed or "none",
        )
        for name in (*added, *changed):
            record_flow(ctx.runner, flows[name])
        ctx.replace_flows(flows)
        requests.record_served(ctx.store, flows.values())
        ctx.wake_queue()

    def _say_folder_missing(self) -> None:
        """Say once per episode that the folder is away (the watch says when it is back)."""
        if self.folder_missing:
            return
        self.folder_missing = True
        log.warning(
            "flows folder %s is missing; the %d loaded flow(s) stay as they are until it returns",
            self.ctx.config.flows,
            len(self.ctx.flows),
        )

    # --- watching the folder ---

    async def watch(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reload on changes of the flows folder; started() once the watch is armed."""
        folder = self.ctx.config.flows
        root = str(folder.resolve())
        started = False

        def armed() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        # awatch waits in a worker thread that sees a cancel only when it returns: its stop
        # event ends it at once. It also returns every 0.1 s (yield_on_timeout), which tells
        # that the watch is armed, and lets the loop notice the folder was replaced: a watch
        # on a deleted folder reports nothing ever again, without an error.
        stop = anyio.Event()
        self.snapshot = _mtimes(folder)  # as last loaded: a change while not armed still counts
        polling = False  # inotify cannot see NFS changes or may hit its watch limit
        async with anyio.create_task_group() as tg:
            tg.start_soon(_set_when_cancelled, stop)
            while True:
                try:
                    await self._watch_until_replaced(folder, root, stop, polling, armed)
                except FileNotFoundError:
                    self._say_folder_missing()
                except OSError as exc:
                    if exc.errno != errno.ENOSPC or polling:
                        raise
                    log.error(
                        "cannot watch %s: the inotify watch limit is reached (raise sysctl "
                        "fs.inotify.max_user_watches); polling the folder instead",
                        folder,
                    )
                    polling = True
                else:
                    if stop.is_set():  # the service is stopping, not the folder changing
                        return
                    if folder.is_dir():
                        log.warning("flows folder %s was replaced; watching it again", folder)
                    else:  # moved away or deleted
                        self._say_folder_missing()
                armed()  # READY does not wait for a missing folder
                await anyio.sleep(0.5)

    async def _watch_until_replaced(
        self, folder: Path, root: str, stop: anyio.Event, polling: bool, armed: Callable[[], None]
    ) -> None:
        """Reload on each change of a ``.py`` file in *folder*, until the folder is deleted or
        replaced, or *stop* is set."""
        from watchfiles import Change, awatch

        def python_files(change: Change, path: str) -> bool:
            return path.endswith(".py") or path == root

        catch_up = True
        identity = _identity(folder)
        async for changes in awatch(
            folder,
            watch_filter=python_files,
            debounce=300,
            stop_event=stop,
            yield_on_timeout=True,
            rust_timeout=100,
            force_polling=polling,
        ):
            if catch_up:  # armed now: catch up on what the gap hid
                catch_up = False
                if self.folder_missing:
                    self.folder_missing = False
                    log.warning("flows folder %s is back", folder)
                armed()
                if _mtimes(folder) != self.snapshot:
                    changes = changes or {(Change.modified, str(folder))}
            if changes:
                await self.reload()
                self.snapshot = _mtimes(folder)
            root_gone = (Change.deleted, root) in changes
            if root_gone or _identity(folder) != identity:
                break


def record_flow(runner: Runner, flow: Flow) -> None:
    """Remember a loaded flow's file and source hash in the store (the ``flows`` table)."""
    path = str(flow.path) if flow.path else None
    runner.store.record_flow(flow.name, path, flow.source_hash(), runner.clock.now())


def _mtimes(folder: Path) -> dict[str, int] | None:
    try:
        return {p.name: p.stat().st_mtime_ns for p in folder.glob("*.py")}
    except OSError:
        return None


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        st = folder.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


async def _set_when_cancelled(event: anyio.Event) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        event.set()
