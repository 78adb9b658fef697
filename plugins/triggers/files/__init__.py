"""The ``files`` trigger source: one run per file landing in a watched folder (or one per
batch), each file's content claimed exactly once, and moved or deleted after its run.

The pieces: :mod:`.spec` (a trigger's options), :mod:`.watching` (finding ready files:
start-up scan, stability, inotify or polling, rescans), :mod:`.claiming` (claims committed
with their runs), :mod:`.settling` and :mod:`.moving` (what happens to a file after its run),
:mod:`.describing` (``sluiceway files``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from plugins.triggers.files import describing
from plugins.triggers.files import spec as specs
from plugins.triggers.files.claiming import Claimer
from plugins.triggers.files.settling import Settler, move_all
from plugins.triggers.files.spec import FilesSpec
from plugins.triggers.files.watching import FileFacts, FolderWatch, classify
from runtime.abc import Binding, SourceMetric, TriggerHost, TriggerSource
from runtime.errors import SluicewayError
from runtime.store.claims import ClaimRow, FileKey, Settlement

__all__ = ["FilesSource"]

log = logging.getLogger("sluiceway.plugins.files")

RESTART_FIRST = 1.0  # a watch that raised is started again after this, doubling ...
RESTART_MAX = 60.0  # ... up to this

Key = tuple[str, str]  # (flow, trigger key)


def _settings(host: TriggerHost) -> tuple[float, bool, float]:
    """``[files]`` of the service's config (rescan, poll, poll_interval), else defaults."""
    files = getattr(getattr(host, "config", None), "files", None)
    if files is None:
        return 60.0, False, 1.0
    return float(files.rescan), bool(files.poll), float(files.poll_interval)


class _Watched:
    """One bound trigger: its watch runs in its own cancel scope, restarted when it fails."""

    def __init__(self, source: FilesSource, binding: Binding, spec: FilesSpec) -> None:
        self.source = source
        self.binding = binding
        self.spec = spec
        self.scope = anyio.CancelScope()
        self.claimer = source.claimers.get((spec.flow, spec.key)) or Claimer(
            spec, source.host, self.report
        )
        self.claimer.spec = spec
        self.claimer.report = self.report
        self.watch: FolderWatch | None = None  # the current one (a failed watch is remade)

    def report(self, problem: str) -> None:
        self.source.host.report(self.binding, problem)

    async def offer(self, files: list[FileFacts]) -> None:
        await self.claimer.offer(files)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        pause, started = RESTART_FIRST, False
        rescan, poll, interval = self.source.settings
        with self.scope:
            while True:
                watch = FolderWatch(
                    self.spec, on_ready=self.offer, report=self.report,
                    rescan=rescan, force_poll=poll, poll_interval=interval,
                )  # fmt: skip
                self.watch = watch
                try:
                    if started:
                        await watch.run()
                    else:
                        await watch.run(task_status=task_status)
                    self.report(f"watching {self.spec.folder} stopped; again in {pause:g}s")
                except Exception as exc:  # noqa: BLE001 - one bad trigger never stops the others
                    self.report(f"watching {self.spec.folder} failed: {exc}; again in {pause:g}s")
                if not started:
                    started = True
                    task_status.started()
                await anyio.sleep(pause)
                pause = min(pause * 2, RESTART_MAX)


class FilesSource(TriggerSource):
    """Serves every ``files()`` trigger of the loaded flows (see the package docstring).

    Start-up: the claims whose runs ended while the service was down are settled, then
    every trigger's folder is scanned and what is ready is claimed; only then is the source
    started. Afterwards each trigger is watched on its own (a trigger whose folder is missing
    is reported and waits for it; the others go on), run ends are settled as they come, and
    every ``[files] rescan`` seconds missed run ends are reconciled and the memory of claimed
    files is pruned to what is still in the folders.
    """

    plugin = "files"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """What is wrong with a ``files()`` trigger's options (see :mod:`.spec`)."""
        return specs.check_options(options)

    @classmethod
    def describe(
        cls, bindings: Sequence[Binding], claims: Sequence[ClaimRow], *, serving: bool
    ) -> list[dict[str, Any]]:
        """``sluiceway files``: every file each of *bindings* sees, merged with the flow's
        *claims* (newest per path), as rows of :data:`.describing.FIELDS`."""
        rows: list[dict[str, Any]] = []
        for binding in bindings:
            rows.extend(describing.describe(specs.resolve(binding), claims, serving=serving))
        return rows

    @classmethod
    def pick(cls, bindings: Sequence[Binding], path: Path) -> Binding:
        """The trigger among *bindings* whose folder holds *path* (``run --file``), else
        the first: its key goes on the claim, and its actions apply after the run."""
        for binding in bindings:
            spec = specs.resolve(binding)
            if classify(spec, path, 0.0).state != "ignored":
                return binding
        return bindings[0]

    @classmethod
    def settle_blocking(
        cls, bindings: Sequence[Binding], claims: Sequence[ClaimRow]
    ) -> list[Settlement]:
        """Carry out ``on_success``/``on_failure`` on the files of ended runs' *claims*
        (``run --file``, after its run); a file outside its trigger's folder is left where
        it is. Blocking; errors are in the returned settlements, never raised."""
        by_key = {b.key: specs.resolve(b) for b in bindings}
        items, outside = [], []
        for claim in claims:
            spec = by_key.get(claim.trigger)
            if spec is None:
                continue
            if Path(claim.key.path).is_relative_to(spec.folder):
                items.append((claim, spec))
            else:
                outside.append(Settlement(claim.id, "left", error="not in the trigger's folder"))
        return move_all(items) + outside

    def __init__(self, host: TriggerHost) -> None:
        super().__init__(host)
        self.settings = _settings(host)
        self.wanted: dict[Key, tuple[Binding, FilesSpec]] = {}
        self.watched: dict[Key, _Watched] = {}
        self.claimers: dict[Key, Claimer] = {}  # kept across reloads: what was claimed
        self.settler = Settler(host, self._lookup, self._forget)
        self._changed = anyio.Event()

    def bind(self, bindings: Sequence[Binding]) -> None:
        """Serve exactly *bindings* from now on (applied by :meth:`run`)."""
        wanted: dict[Key, tuple[Binding, FilesSpec]] = {}
        for binding in bindings:
            try:
                spec = specs.resolve(binding)
            except ValueError as exc:  # a loaded flow's options were checked: unlikely
                self.host.report(binding, f"files(): {exc}")
                continue
            wanted[(binding.flow, binding.key)] = (binding, spec)
        self.wanted.clear()
        self.wanted.update(wanted)
        self.settler.flows = {flow for flow, _ in wanted}
        self._changed.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Reconcile, start every watch (each one's start-up scan claimed), report started,
        then follow re-bindings until cancelled."""
        unsubscribe = self.host.bus.subscribe(self.settler.on_event)
        try:
            async with anyio.create_task_group() as tg:
                await self._reconcile()
                await tg.start(self.settler.run, name="files: settling")
                self._changed = anyio.Event()
                await self._apply(tg)
                task_status.started()
                tg.start_soon(self._housekeeping, name="files: reconcile and prune")
                while True:
                    await self._changed.wait()
                    self._changed = anyio.Event()
                    await self._apply(tg)
        finally:
            unsubscribe()

    async def _apply(self, tg: TaskGroup) -> None:
        for key, watched in list(self.watched.items()):
            now = self.wanted.get(key)
            if now is None or now[1] != watched.spec:
                watched.scope.cancel()
                del self.watched[key]
        fresh = []
        for key, (binding, spec) in self.wanted.items():
            if key in self.watched:
                self.watched[key].binding = binding
                continue
            watched = self.watched[key] = _Watched(self, binding, spec)
            self.claimers[key] = watched.claimer
            fresh.append(watched)
        for key in self.claimers.keys() - self.wanted.keys():
            del self.claimers[key]
        async with anyio.create_task_group() as starting:  # scans in parallel
            for watched in fresh:
                name = f"files: {watched.spec.flow} {watched.spec.folder}"
                starting.start_soon(_start, tg, watched, name)

    async def _reconcile(self) -> None:
        try:
            await self.settler.reconcile()
        except (SluicewayError, OSError) as exc:
            self.host.report(None, f"files: cannot reconcile claims: {exc}")

    async def _housekeeping(self) -> None:
        while True:
            await anyio.sleep(self.settings[0])
            await self._reconcile()
            for claimer in list(self.claimers.values()):
                await claimer.prune()

    def metrics(self) -> list[SourceMetric]:
        """``backlog`` per flow: files seen and ``stabilizing`` (still being written, or
        within ``stable_for``), and complete files not claimed yet (``ready``). Claimed
        files whose run has not ended are the store's ``sluiceway_file_claims_unsettled``."""
        totals: dict[str, list[int]] = {}
        for (flow, _), watched in self.watched.items():
            counts = totals.setdefault(flow, [0, 0])
            if watched.watch is not None:
                waiting, ready = watched.watch.backlog(watched.claimer.known)
                counts[0] += waiting
                counts[1] += ready
        help_ = "files a files() trigger has seen but not claimed for a run yet"
        return [
            SourceMetric("backlog", help_, n, {"flow": flow, "state": state})
            for flow, counts in sorted(totals.items())
            for state, n in zip(("stabilizing", "ready"), counts, strict=True)
        ]

    def _lookup(self, flow: str, trigger: str) -> tuple[Binding, FilesSpec] | None:
        return self.wanted.get((flow, trigger))

    def _forget(self, flow: str, trigger: str, key: FileKey) -> None:
        for (f, _), claimer in self.claimers.items():
            if f == flow:  # every trigger of the flow may remember the path
                claimer.forget(key)


async def _start(tg: TaskGroup, watched: _Watched, name: str) -> None:
    await tg.start(watched.run, name=name)
