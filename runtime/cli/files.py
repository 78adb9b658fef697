"""CLI: ``sluiceway files FLOW [--json]`` ("why didn't my file run?"), and what ``sluiceway
run FLOW --file PATH`` needs from the files plugin.

The runtime does not import plugins: the ``files`` trigger source is found through the
registry, and the few class methods this module calls on it are described by
:class:`FilesPlugin`.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import anyio

from runtime import codec
from runtime.abc import Binding
from runtime.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, load_flow, out
from runtime.config import Config
from runtime.define.flow import Flow
from runtime.define.result import RunResult
from runtime.engine.handle import RunHandle
from runtime.engine.runner import Runner
from runtime.errors import SluicewayError
from runtime.registry import trigger_source
from runtime.service.sources import bindings
from runtime.store import claims, connect_reader
from runtime.store.claims import ClaimRow, Settlement
from runtime.store.lock import service_running

PLUGIN = "files"

# starts the run on the runner and returns it ended (as runtime.cli.run.Start)
Start = Callable[[Runner, RunHandle], Awaitable[RunResult]]


class FilesPlugin(Protocol):
    """The class methods of the ``files`` trigger source that the CLI uses."""

    def describe(
        self, bindings: Sequence[Binding], claims: Sequence[ClaimRow], *, serving: bool
    ) -> list[dict[str, Any]]: ...

    def pick(self, bindings: Sequence[Binding], path: Path) -> Binding: ...

    def settle_blocking(
        self, bindings: Sequence[Binding], claims: Sequence[ClaimRow]
    ) -> list[Settlement]: ...


def files_plugin() -> FilesPlugin:
    """The installed ``files`` trigger source class.

    :raises SluicewayError: when it is not installed or lacks what the CLI needs
    """
    cls = trigger_source(PLUGIN)
    missing = [m for m in ("describe", "pick", "settle_blocking") if not hasattr(cls, m)]
    if missing:
        raise SluicewayError(f"the {PLUGIN!r} plugin {cls!r} lacks {', '.join(missing)}")
    return cast("FilesPlugin", cls)


def file_bindings(flow: Flow) -> list[Binding]:
    """The ``files()`` triggers of *flow*, as the service binds them."""
    return bindings({flow.name: flow}).get(PLUGIN, [])


def read_claims(db: Path, flow: str) -> list[ClaimRow]:
    """The newest claim per path of *flow*; none when there is no database yet."""
    if not db.exists():
        return []
    conn = connect_reader(db)
    try:
        return claims.latest_claims(conn, flow)
    finally:
        conn.close()


def cmd_files(args: argparse.Namespace, config: Config) -> int:
    """``sluiceway files FLOW [--json]``: every file each ``files()`` trigger of the flow
    sees, with its state, merged with the claims; works with or without a service."""
    flow = load_flow(config, args.flow)
    found = file_bindings(flow)
    if not found:
        err(
            f"sluiceway: flow {flow.name!r} has no files() trigger, so no file starts it "
            "(add triggers=[files('FOLDER', pattern='*.csv')] to its Flow)"
        )
        return EXIT_USAGE
    try:
        stored = read_claims(config.db, flow.name)
    except sqlite3.Error as exc:
        raise SluicewayError(f"{config.db}: cannot read the claims: {exc}") from exc
    serving = config.db.exists() and service_running(config.db)
    rows = files_plugin().describe(found, stored, serving=serving)
    if args.json:
        out(codec.pretty(rows))
        return EXIT_OK
    _table(found, rows)
    return EXIT_OK


def _detail(row: dict[str, Any]) -> str:
    why = row["why"] or ""
    if row["state"] == "waiting" and row["ready_at"]:
        return f"{why}; last changed {row['mtime']}, ready at {row['ready_at']}"
    return why


def _table(found: Sequence[Binding], rows: Sequence[dict[str, Any]]) -> None:
    for binding in found:
        mine = [r for r in rows if r["trigger"] == binding.key]
        out(f"{binding.key}  ({binding.where})")
        if not mine:
            out("  (no files)")
        width = max((len(str(r["path"])) for r in mine), default=4)
        for r in mine:
            size = "" if r["size"] is None else str(r["size"])
            line = f"  {r['state']:<10} {r['path']:<{width}} {size:>10}  {_detail(r)}"
            out(line.rstrip())
        out()


# --- sluiceway run FLOW --file PATH ---


def _already(path: str, claim: ClaimRow) -> str:
    return (
        f"{path} (size {claim.key.size}, mtime {codec.iso(claims.mtime_of(claim.key.mtime_ns))}) "
        f"was already claimed by run {claim.run_id} ({claim.run_state or 'missing'}) at "
        f"{claim.claimed_at}: this content runs once. `sluiceway retry {claim.run_id}` runs its "
        "failed tasks again; a rewritten file is new content and gets a new run"
    )


def _file_key(path: Path) -> claims.FileKey | str:
    """The claim key of *path*, or why it cannot be run."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"{path}: no such file"
    except OSError as exc:
        return f"{path}: cannot read: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path}: not a regular file"
    return claims.FileKey(str(path), st.st_size, st.st_mtime_ns)


def file_start(
    args: argparse.Namespace, config: Config, flow: Flow, params: dict[str, Any], notes: list[str]
) -> Start | int:
    """What ``run --file`` starts on the runner, or the exit code of why it cannot.

    The file is claimed and its run queued in one transaction (so the service never runs
    this content again), the run is executed here, then the trigger's ``on_success`` /
    ``on_failure`` is carried out on the file as the service would; what became of the file
    is added to *notes* (printed after the run's own lines).
    """
    found = file_bindings(flow)
    if not found:
        err(f"sluiceway: flow {flow.name!r} has no files() trigger; --file needs one")
        return EXIT_USAGE
    if args.key is not None:
        err("sluiceway: --key cannot be used with --file: the file's content is the key")
        return EXIT_USAGE
    path = Path(os.path.abspath(args.file.expanduser()))
    key = _file_key(path)
    if isinstance(key, str):
        err(f"sluiceway: {key}")
        return EXIT_USAGE
    if config.db.exists():
        conn = connect_reader(config.db)
        try:
            claim = claims.claim_of(conn, flow.name, key)
        finally:
            conn.close()
        if claim is not None:
            err(f"sluiceway: {_already(str(path), claim)}")
            return EXIT_FAILED
    plugin = files_plugin()
    binding = plugin.pick(found, path)

    async def start(runner: Runner, handle: RunHandle) -> RunResult:
        flow.validate(runner.limits.pools, runner.engine.executors.names)
        made = await claims.claim_files(
            runner.store, flow=flow.name, trigger_key=binding.key, files=[key], batch=False,
            params=params, source_hash=flow.source_hash(), now=runner.clock.now(),
            epoch=runner.epoch,
        )  # fmt: skip
        if not made:  # claimed between the check above and now
            claim = await runner.store.read(claims.claim_of, flow.name, key)
            raise SluicewayError(_already(str(path), claim) if claim else f"{path}: not claimed")
        run_id = made[0].run_id
        if not runner.try_admit(flow):
            raise SluicewayError(f"flow {flow.name!r}: max_active_runs reached in this process")
        result = await runner.run_queued(flow, run_id, handle=handle)
        if result is None:
            raise SluicewayError(f"run {run_id} was cancelled before it started")
        rows = await runner.store.read(claims.claims_of_runs, [run_id])
        done = await anyio.to_thread.run_sync(plugin.settle_blocking, found, rows)
        await claims.settle_claims(runner.store, done, runner.clock.now())
        notes.extend(_said(path, got) for got in done)
        return result

    return start


def _said(path: Path, got: Settlement) -> str:
    if got.outcome == "moved":
        return f"{path}: moved to {got.moved_to}"
    if got.outcome == "deleted":
        return f"{path}: deleted"
    if got.outcome == "left":
        return f"{path}: left in place" + (f" ({got.error})" if got.error else "")
    return f"{path}: not moved: {got.error}"
