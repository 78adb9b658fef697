"""Claiming one trigger's ready files: each content once, its run queued in the same
transaction, many files per transaction, and rescans answered from memory."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio

from plugins.triggers.files.spec import FilesSpec
from runtime.abc import TriggerHost
from runtime.errors import SluicewayError
from runtime.store import claims
from runtime.store.claims import Claimed, FileKey

__all__ = ["CHUNK", "Claimer", "HasFacts"]

log = logging.getLogger("sluiceway.plugins.files")

CHUNK = 500  # claims (and runs) per transaction in a storm: one fsync per 500 files


class HasFacts(Protocol):
    """What a ready file is offered as (``watching.FileFacts``)."""

    @property
    def path(self) -> Path: ...
    @property
    def size(self) -> int: ...
    @property
    def mtime_ns(self) -> int: ...


def _chunks(items: Sequence[FileKey], size: int) -> Iterable[Sequence[FileKey]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Claimer:
    """Claims the ready files of one ``files()`` trigger.

    ``known`` remembers, per path, the content last claimed (by this trigger, another trigger
    of the flow, or ``run --file``): a rescan that offers the same files again costs no
    write, nor a read. It only holds paths seen in the folder; a path that is moved away, or
    no longer exists at :meth:`prune`, is forgotten. The store's unique index, not this
    memory, is what makes a claim happen once.
    """

    def __init__(
        self,
        spec: FilesSpec,
        host: TriggerHost,
        report: Callable[[str], None],
        *,
        chunk: int = CHUNK,
    ) -> None:
        self.spec = spec
        self.host = host
        self.report = report
        self.chunk = chunk
        self.known: dict[str, tuple[int, int]] = {}
        self._lock = anyio.Lock()  # one offer at a time: a rescan waits for the storm

    async def offer(self, files: Sequence[HasFacts]) -> list[Claimed]:
        """Claim the files among *files* whose content was never claimed, and queue their
        runs (one each, or one for all with ``batch``); return the new claims. Store errors
        are reported, not raised: the files stay unclaimed and the next rescan offers them
        again."""
        async with self._lock:
            try:
                return await self._offer(files)
            except SluicewayError as exc:
                self.report(f"cannot claim {len(files)} file(s) in {self.spec.folder}: {exc}")
                return []

    async def _offer(self, files: Sequence[HasFacts]) -> list[Claimed]:
        fresh = list(
            dict.fromkeys(
                FileKey(str(f.path), f.size, f.mtime_ns)
                for f in files
                if self.known.get(str(f.path)) != (f.size, f.mtime_ns)
            )
        )
        if not fresh:
            return []
        store = self.host.store
        seen: set[FileKey] = await store.read(
            claims.claimed_among, self.spec.flow, fresh, flush=False
        )
        self._remember(seen)
        todo = [k for k in fresh if k not in seen]
        if not todo:
            return []
        flow = self.host.flow(self.spec.flow)
        if flow is None:  # unloaded by a reload racing this offer: its files wait
            return []
        made: list[Claimed] = []
        for part in [todo] if self.spec.batch is not None else _chunks(todo, self.chunk):
            new = await self._claim(flow, part)
            made.extend(new)
            self._remember(part)  # claimed now, or by someone else meanwhile
            if new:
                self.host.wake_queue()
        return made

    async def _claim(self, flow: Any, part: Sequence[FileKey]) -> list[Claimed]:
        new = await claims.claim_files(
            self.host.store,
            flow=self.spec.flow,
            trigger_key=self.spec.key,
            files=part,
            batch=self.spec.batch is not None,
            params=flow.params,
            source_hash=flow.source_hash(),
            now=self.host.now(),
        )
        runs = sorted({c.run_id for c in new})
        if runs:
            log.info(
                "flow=%s trigger=%s claimed %d file(s) in %s: runs %s",
                self.spec.flow, self.spec.key, len(new), self.spec.folder,
                _span(runs),
            )  # fmt: skip
        return new

    def _remember(self, keys: Iterable[FileKey]) -> None:
        for k in keys:
            self.known[k.path] = (k.size, k.mtime_ns)

    def forget(self, key: FileKey) -> None:
        """The file of *key* left the folder (moved, deleted): stop remembering it."""
        if self.known.get(key.path) == (key.size, key.mtime_ns):
            del self.known[key.path]

    def gone(self) -> list[str]:
        """The remembered paths that no longer exist (blocking: call it in a thread)."""
        return [p for p in list(self.known) if not Path(p).exists()]

    async def prune(self) -> None:
        """Forget the remembered paths that no longer exist, so memory follows the folder."""
        for path in await anyio.to_thread.run_sync(self.gone):
            self.known.pop(path, None)


def _span(ids: Sequence[int]) -> str:
    """``4`` / ``4-9`` / ``4-9 (5 runs)``: the runs a claim made, briefly."""
    if len(ids) == 1:
        return str(ids[0])
    return f"{ids[0]}-{ids[-1]} ({len(ids)} runs)"
