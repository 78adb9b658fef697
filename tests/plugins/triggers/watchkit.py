"""What the folder-watcher tests share: a spec on a temp folder, a recorder of what the watch
offered and reported, a running watch, and an async wait against one generous deadline."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import anyio

from plugins.triggers.files.spec import FilesSpec, resolve
from plugins.triggers.files.watching import FileFacts, FolderWatch
from runtime.abc import Binding
from tests.waiting import WAIT

T = TypeVar("T")


def make_spec(folder: Path, **options: Any) -> FilesSpec:
    """The spec of ``files(folder, **options)`` in a flow ``ingest`` at ``flows/ingest.py:3``."""
    options = {"folder": str(folder), **options}
    return resolve(Binding("ingest", "files", options, folder.parent, "flows/ingest.py:3"))


class Recorder:
    """Collects what a watch hands over and reports."""

    def __init__(self) -> None:
        self.calls: list[list[FileFacts]] = []
        self.reports: list[str] = []

    async def on_ready(self, files: list[FileFacts]) -> None:
        self.calls.append(list(files))

    def report(self, problem: str) -> None:
        self.reports.append(problem)

    @property
    def offered(self) -> list[FileFacts]:
        return [f for call in self.calls for f in call]

    def names(self) -> list[str]:
        return sorted(f.path.name for f in self.offered)

    def distinct(self) -> set[Path]:
        return {f.path for f in self.offered}


async def until(check: Callable[[], T | None], what: str, *, within: float = WAIT) -> T:
    """Poll *check* on the loop (other tasks run meanwhile) until it is truthy; fail after
    *within* seconds naming *what*."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g}s waiting for {what}")
        await anyio.sleep(0.02)


@asynccontextmanager
async def watching(watch: FolderWatch) -> AsyncIterator[FolderWatch]:
    """Run *watch* until the block ends; the block starts after its ``started()``."""
    async with anyio.create_task_group() as tg:
        await tg.start(watch.run)
        yield watch
        tg.cancel_scope.cancel()


def write(path: Path, data: str = "a,b\n1,2\n", *, age: float = 0.0) -> Path:
    """Write *path*; with *age*, set its mtime that many seconds in the past."""
    path.write_text(data)
    if age:
        past = time.time() - age
        os.utime(path, (past, past))
    return path
