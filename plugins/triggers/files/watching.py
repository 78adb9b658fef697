"""The folder watcher of a ``files()`` trigger: finds files in one folder, waits until each is
complete, and hands complete files to the claimer.

Inotify (through watchfiles) is only a hint: it drops events in bursts and goes deaf when its
folder is deleted and made again. The truth is a scan: one at start, one after every big burst,
one every ``rescan`` seconds, and one per ``poll`` interval when polling. Scans and stats run in
worker threads; the loop only keeps a dict per path and one heap of stability timers.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskStatus

from plugins.triggers.files.inotify import DELETED, Changes, Inotify, why_watch_failed
from plugins.triggers.files.scanning import (
    FileFacts,
    FileState,
    Stat,
    classify,
    folder_problem,
    look_at_changes,
    network_fs,
    scan_folder,
    stat_files,
)
from plugins.triggers.files.spec import FilesSpec
from plugins.triggers.files.stability import Stability

__all__ = ["FileFacts", "FileState", "FolderWatch", "classify"]

log = logging.getLogger("sluiceway.plugins.files")

CHUNK = 1000  # files per on_ready call (without batch)
SLICE = 500  # stats observed on the loop between two checkpoints (a few ms)
CHECK_EVERY = 2.0  # seconds between looks at a missing folder
STORM = 500  # changes in one batch from which inotify may have dropped some: scan soon
STORM_QUIET = 0.5  # seconds without a big batch before that scan


class _Signal:
    """An event that can be waited on again and again."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        self._event = anyio.Event()


class FolderWatch:
    """Watches one FilesSpec's folder and hands over files once they are complete.

    :param spec: the trigger
    :param on_ready: awaited with complete files: a chunk of up to :data:`CHUNK` files
        (``spec.batch`` unset; one run per file), or every file that became ready within one
        batch window (one run per list). A file may be offered again by a rescan; the claimer
        deduplicates on (flow, path, size, mtime_ns).
    :param report: called once with a sentence naming the folder when it is missing,
        unreadable or deleted (again after it came back and went again)
    :param rescan: seconds between full scans that offer every complete file present
    :param force_poll: scan every *poll_interval* instead of using inotify
    :param poll_interval: seconds between scans when polling (``spec.poll`` wins)
    :param clock: monotonic seconds, for the stability windows
    """

    def __init__(
        self,
        spec: FilesSpec,
        *,
        on_ready: Callable[[list[FileFacts]], Awaitable[None]],
        report: Callable[[str], None],
        rescan: float = 60.0,
        force_poll: bool = False,
        poll_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spec = spec
        self._on_ready = on_ready
        self._report = report
        self._rescan = rescan
        self._force_poll = force_poll
        self._poll_interval = spec.poll if spec.poll is not None else poll_interval
        self._clock = clock
        self._files = Stability(spec.stable_for, clock)
        self._pending: dict[str, FileFacts] = {}  # by Stat.key
        self._pending_signal = _Signal()
        self._timer_signal = _Signal()
        self._storm_signal = _Signal()
        self._missing: str | None = None  # the problem reported while the folder is unusable
        self._fallback: str | None = None  # why inotify failed: poll from then on

    def __repr__(self) -> str:
        return f"FolderWatch(flow={self.spec.flow!r}, folder={str(self.spec.folder)!r})"

    def states(self) -> list[FileState]:
        """What the watch knows now, for status displays: every file it found under its name
        rules, ready or waiting for stability (with the wall-clock time it will be ready)."""
        return self._files.states(time.time())

    def backlog(self, claimed: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        """(files waiting for stability, complete files not in *claimed*); see
        :meth:`Stability.backlog`."""
        return self._files.backlog(claimed)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Scan the folder and hand over the files complete already, then call
        ``task_status.started()`` and watch until cancelled."""
        notify = None  # armed before the scan: a file landing in between is not missed
        usable = await anyio.to_thread.run_sync(folder_problem, self.spec.folder) is None
        if usable and await self._polling_reason() is None:
            notify = await self._arm()
        try:
            await self._startup()
        except BaseException:
            if notify is not None:
                notify.close()
            raise
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run_timers, name=f"{self!r} timers")
            tg.start_soon(self._run_offers, name=f"{self!r} offers")
            tg.start_soon(self._run_rescans, name=f"{self!r} rescans")
            tg.start_soon(self._run_watch, notify, name=f"{self!r} watch")
            task_status.started()

    # --- what was found ---

    async def _startup(self) -> None:
        taken = self._clock()
        problem, seen = await anyio.to_thread.run_sync(scan_folder, self.spec)
        if problem is not None:
            self._say_missing(problem)
            return
        ready = [facts for _, facts in await self._observe(seen, taken=taken, again=True)]
        log.info(
            "flow=%s watching %s: %d file(s) complete at start, %d waiting",
            self.spec.flow,
            self.spec.folder,
            len(ready),
            len(self._files) - len(ready),
        )
        if self.spec.batch is not None:
            if ready:
                await self._on_ready(ready)
            return
        for i in range(0, len(ready), CHUNK):
            await self._on_ready(ready[i : i + CHUNK])

    async def _observe(
        self, seen: list[Stat], *, taken: float, again: bool
    ) -> list[tuple[str, FileFacts]]:
        """Feed stats asked for at *taken* to the stability tracker in slices, so that a storm
        of files does not hold the loop; the files to offer now, with their keys."""
        ready: list[tuple[str, FileFacts]] = []
        for i in range(0, len(seen), SLICE):
            if i:
                await anyio.lowlevel.checkpoint()
            wall = time.time()
            for one in seen[i : i + SLICE]:
                facts = self._files.observe(one, wall, taken=taken, again=again)
                if facts is not None:
                    ready.append((one.key, facts))
        self._timer_signal.set()
        return ready

    def _offer(self, ready: Iterable[tuple[str, FileFacts]]) -> None:
        for key, facts in ready:
            self._pending[key] = facts
        if self._pending:
            self._pending_signal.set()

    async def _scan(self, *, again: bool) -> str | None:
        """One full scan: offer what is ready (everything ready when *again*), forget what is
        gone; the folder's problem instead, if it has one."""
        started = self._clock()
        problem, seen = await anyio.to_thread.run_sync(scan_folder, self.spec)
        if problem is not None:
            return problem
        self._files.retain((s.key for s in seen), started)
        self._offer(await self._observe(seen, taken=started, again=again))
        return None

    # --- the loops ---

    async def _run_offers(self) -> None:
        """Hand pending files to the claimer, awaiting each call (back-pressure)."""
        while True:
            if not self._pending:
                await self._pending_signal.wait()
                continue
            if self.spec.batch is not None:
                await anyio.sleep(self.spec.batch)  # the window opens with its first file
                files = list(self._pending.values())
                self._pending.clear()
            else:
                chunk = list(itertools.islice(self._pending, CHUNK))
                files = [self._pending.pop(key) for key in chunk]
            await self._on_ready(files)

    async def _run_timers(self) -> None:
        """Stat each file again when its stability window ends."""
        while True:
            due = self._files.next_due()
            if due is None:
                await self._timer_signal.wait()
                continue
            delay = due - self._clock()
            if delay > 0:
                with anyio.move_on_after(delay):
                    await self._timer_signal.wait()
                continue
            taken = self._clock()
            keys = self._files.pop_due(taken)
            if not keys:
                continue
            seen = await anyio.to_thread.run_sync(stat_files, keys)
            for key in set(keys).difference(s.key for s in seen):
                self._files.forget(key)
            self._offer(await self._observe(seen, taken=taken, again=False))

    async def _run_rescans(self) -> None:
        """The periodic scan that offers every complete file again, and a scan soon after a
        burst big enough that inotify may have dropped events."""
        next_rescan = self._clock() + self._rescan
        while True:
            storm = False
            with anyio.move_on_after(max(0.0, next_rescan - self._clock())):
                await self._storm_signal.wait()
                storm = True
                while True:  # wait for the burst to pass
                    with anyio.move_on_after(STORM_QUIET) as quiet:
                        await self._storm_signal.wait()
                    if quiet.cancelled_caught:
                        break
            # the scan runs outside the timeout: a cut scan would lose what it found ready
            if not storm:
                next_rescan = self._clock() + self._rescan
            if self._missing is None:
                await self._scan(again=not storm)

    async def _run_watch(self, notify: Inotify | None) -> None:
        """Watch the folder while it is there; report it once when it is not, and pick it up
        again when it is back."""
        while True:
            if notify is None:
                problem = await anyio.to_thread.run_sync(folder_problem, self.spec.folder)
                if problem is not None:
                    self._say_missing(problem)
                    await anyio.sleep(CHECK_EVERY)
                    continue
                if await self._polling_reason() is not None:
                    self._say_back()
                    await self._poll()
                    continue
                notify = await self._arm()
                if notify is None:
                    continue
                self._say_back()
                await self._scan(again=False)  # what landed before the watch was armed
            try:
                await notify.run(self._changed, self._clock)
            except RuntimeError as exc:  # the notify thread failed: polling is the safe way
                self._fall_back(exc)
            finally:
                notify.close()
            notify = None

    async def _arm(self) -> Inotify | None:
        """An inotify watch on the folder, or ``None`` (the folder is gone, or watching failed
        and the watch polls from now on)."""
        try:
            return await Inotify.arm(self.spec.folder, recursive=self.spec.recursive)
        except FileNotFoundError as exc:
            if await anyio.to_thread.run_sync(folder_problem, self.spec.folder) is None:
                self._fall_back(exc)  # there after all: not a race with its deletion
        except (OSError, RuntimeError) as exc:
            self._fall_back(exc)
        return None

    def _fall_back(self, exc: BaseException) -> None:
        self._fallback = why_watch_failed(exc)
        log.warning(
            "flow=%s cannot watch %s with inotify (%s); polling it every %gs instead",
            self.spec.flow,
            self.spec.folder,
            self._fallback,
            self._poll_interval,
        )

    async def _polling_reason(self) -> str | None:
        if self._fallback is not None:
            return self._fallback
        if self.spec.poll is not None:
            return f"the trigger sets poll={self.spec.poll:g}s"
        if self._force_poll:
            return "[files] poll = true"
        fstype = await anyio.to_thread.run_sync(network_fs, self.spec.folder)
        if fstype is not None:
            self._fallback = f"it is on {fstype}, where inotify misses other machines' changes"
            log.warning(
                "flow=%s folder %s is on %s: polling it every %gs instead of inotify",
                self.spec.flow,
                self.spec.folder,
                fstype,
                self._poll_interval,
            )
            return self._fallback
        return None

    async def _poll(self) -> None:
        """Scan every poll interval until the folder is gone."""
        log.info(
            "flow=%s polling %s every %gs (%s)",
            self.spec.flow,
            self.spec.folder,
            self._poll_interval,
            await self._polling_reason(),
        )
        while True:
            if await self._scan(again=False) is not None:
                return
            await anyio.sleep(self._poll_interval)

    async def _changed(self, changes: Changes) -> None:
        if len(changes) >= STORM:
            self._storm_signal.set()
        taken = self._clock()
        seen, gone = await anyio.to_thread.run_sync(look_at_changes, self.spec, changes, DELETED)
        for key in gone:
            self._files.forget(key)
        self._offer(await self._observe(seen, taken=taken, again=False))

    def _say_back(self) -> None:
        if self._missing is not None:
            self._missing = None
            log.info("flow=%s folder %s is back; watching it", self.spec.flow, self.spec.folder)

    def _say_missing(self, problem: str) -> None:
        if self._missing is None:
            self._missing = problem
            self._report(
                f"{problem}; the files() trigger of flow '{self.spec.flow}' ({self.spec.where}) "
                f"picks it up when it appears"
            )
