"""One inotify watch on a folder (watchfiles' Rust backend), read from a worker thread until
the folder is deleted or replaced; and why a watch could not be made, in words.

``RustNotify`` is used directly rather than ``awatch``: creating it arms the watch, so the
watcher knows when it is armed and can scan after that (nothing lands unseen in between),
and it raises at once when the folder is missing or the watch limit is reached.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread
from watchfiles import Change
from watchfiles._rust_notify import RustNotify  # documented: "Rust backend direct usage"

from plugins.triggers.files.scanning import identity

ROOT_CHECK = 1.0  # seconds between checks that the watched folder is still the same one
DEBOUNCE, STEP = 400, 20  # ms: changes are grouped for at most 400 ms, 20 ms quiet ends a group

Changes = set[tuple[int, str]]
"""Raw changes as watchfiles' Rust side gives them: ``(Change value, path)``; a storm holds
thousands, and making a ``Change`` of each on the event loop would cost more than the rest."""
DELETED = int(Change.deleted)


async def _set_when_cancelled(event: threading.Event) -> None:
    try:
        await anyio.sleep_forever()
    finally:
        event.set()


class Inotify:
    """An armed watch on *folder* (and below it when *recursive*)."""

    def __init__(self, folder: Path, notify: RustNotify) -> None:
        self.folder = folder
        self._notify = notify

    @classmethod
    async def arm(cls, folder: Path, *, recursive: bool) -> Inotify:
        """Watch *folder* from now on.

        :raises FileNotFoundError: the folder is missing
        :raises OSError: the watch limit is reached, or another reason inotify cannot be used
        :raises RuntimeError: watchfiles' internal error
        """
        notify = await anyio.to_thread.run_sync(
            RustNotify, [str(folder)], False, False, 0, recursive, True
        )
        return cls(folder, notify)

    def close(self) -> None:
        """Stop the watch's thread."""
        self._notify.close()

    async def run(
        self,
        on_changes: Callable[[Changes], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        """Await *on_changes* with each group of changed paths until the folder is deleted or
        replaced by another folder of the same name (inotify then goes deaf, silently).

        :raises RuntimeError: the watch failed while watching
        """
        root = str(self.folder)
        armed_as = await anyio.to_thread.run_sync(identity, self.folder)
        next_check = clock() + ROOT_CHECK
        stop = threading.Event()
        timeout = int(ROOT_CHECK * 1000)
        async with anyio.create_task_group() as tg:
            # watch() waits in a worker thread that sees a cancel only when it returns: the
            # stop event ends it within a step; its timeout lets this loop check the folder
            tg.start_soon(_set_when_cancelled, stop)
            while True:
                raw = await anyio.to_thread.run_sync(
                    self._notify.watch, DEBOUNCE, STEP, timeout, stop
                )
                if isinstance(raw, set):
                    await on_changes(raw)
                    if (DELETED, root) in raw:
                        break
                if clock() >= next_check:
                    next_check = clock() + ROOT_CHECK
                    if await anyio.to_thread.run_sync(identity, self.folder) != armed_as:
                        break
            tg.cancel_scope.cancel()


def why_watch_failed(exc: BaseException) -> str:
    """What a failure to watch means, with the knob to turn when there is one."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "the inotify watch limit is reached: raise sysctl fs.inotify.max_user_watches"
    if isinstance(exc, OSError) and exc.errno == errno.EMFILE:
        return "too many inotify instances: raise sysctl fs.inotify.max_user_instances"
    text = str(exc) or type(exc).__name__
    if "No space left" in text or "limit" in text.lower():
        return f"{text}: raise sysctl fs.inotify.max_user_watches"
    return text
