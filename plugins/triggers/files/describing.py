"""``sluiceway files``: "why didn't my file run?" — every file a trigger sees, merged with the
claims, as rows of stable fields.

Reads only: the folder (as the watcher would judge each file, :func:`watching.classify`) and
the claims the CLI read from the store. Blocking file system calls; the CLI has no loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plugins.triggers.files.scanning import folder_problem
from plugins.triggers.files.spec import FilesSpec
from plugins.triggers.files.watching import FileState, classify
from runtime import codec
from runtime.store.claims import ClaimRow, mtime_of

__all__ = ["FIELDS", "describe"]

FIELDS = (
    "flow", "trigger", "path", "state", "why", "size", "mtime", "ready_at", "run_id",
    "run_state", "claimed_at", "moved_to",
)  # fmt: skip
"""The fields of every row, in order (``sluiceway files --json``)."""

_GONE = {"moved": "moved", "deleted": "deleted"}


def _listing(spec: FilesSpec) -> Iterator[Path]:
    """Every entry the trigger could see: the folder's files, and below it when recursive
    (hidden subfolders are not entered; classify says why their files do not count)."""
    todo = [spec.folder]
    while todo:
        folder = todo.pop()
        try:
            with os.scandir(folder) as entries:
                found = sorted(entries, key=lambda e: e.name)
        except OSError:
            continue
        for entry in found:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if spec.recursive and not entry.name.startswith("."):
                    todo.append(Path(entry.path))
                continue
            yield Path(entry.path)


def _iso_epoch(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return codec.iso(datetime.fromtimestamp(seconds, UTC))


def _row(spec: FilesSpec, path: str, state: str, why: str | None, **more: Any) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row.update(flow=spec.flow, trigger=spec.key, path=path, state=state, why=why, **more)
    return row


def _claimed(spec: FilesSpec, claim: ClaimRow, present: bool) -> dict[str, Any]:
    """A row for a file whose content was claimed (still in the folder, or not)."""
    facts = {
        "size": claim.key.size,
        "mtime": codec.iso(mtime_of(claim.key.mtime_ns)),
        "run_id": claim.run_id,
        "run_state": claim.run_state,
        "claimed_at": claim.claimed_at,
        "moved_to": claim.moved_to,
    }
    run = f"run {claim.run_id} {claim.run_state or 'missing'}"
    if claim.outcome in _GONE and not present:
        where = f" to {claim.moved_to}" if claim.moved_to else ""
        return _row(spec, claim.key.path, _GONE[claim.outcome], f"{run}; {claim.outcome}{where}", **facts)  # fmt: skip
    if not present:
        return _row(spec, claim.key.path, "gone", f"{run}; the file left the folder", **facts)
    if claim.outcome == "failed":
        why = f"{run}; {claim.settle_error}"
    elif claim.outcome == "kept":
        why = f"{run}; not moved: {claim.settle_error}"
    elif claim.outcome == "left":
        why = f"{run}; left in place (the trigger moves nothing)"
    elif claim.settled_at is None and claim.run_state in ("succeeded", "failed", "cancelled"):
        why = f"{run}; to be moved by the service"
    else:
        why = run
    return _row(spec, claim.key.path, "claimed", why, **facts)


def _unclaimed(
    spec: FilesSpec, seen: FileState, earlier: ClaimRow | None, serving: bool
) -> dict[str, Any]:
    why = seen.why
    if seen.state == "ready":
        why = (
            "a service is running: claimed at its next scan"
            if serving
            else "no service is running: `sluiceway serve` claims it at start"
        )
    if earlier is not None and seen.state in ("ready", "waiting"):
        why = f"{why}; new content (run {earlier.run_id} had the earlier content)"
    mtime = codec.iso(mtime_of(seen.mtime_ns)) if seen.mtime_ns is not None else None
    return _row(
        spec, str(seen.path), seen.state, why, size=seen.size, mtime=mtime,
        ready_at=_iso_epoch(seen.ready_at),
    )  # fmt: skip


def describe(
    spec: FilesSpec, claims: Sequence[ClaimRow], *, serving: bool, now: float | None = None
) -> list[dict[str, Any]]:
    """Every file of *spec*'s folder as the trigger sees it, merged with *claims* (the flow's
    newest claim per path), plus the claimed files no longer there; rows of :data:`FIELDS`.

    :param serving: whether a service runs on this store (what a ready file waits for)
    :param now: wall-clock epoch seconds (default: now)
    """
    wall = time.time() if now is None else now
    folder = str(spec.folder) + os.sep
    mine = {c.key.path: c for c in claims if c.key.path.startswith(folder)}
    rows = []
    problem = folder_problem(spec.folder)
    if problem is not None:
        rows.append(_row(spec, str(spec.folder), "unreadable", problem))
    present: set[str] = set()
    for path in [] if problem else _listing(spec):
        seen = classify(spec, path, wall)
        present.add(str(path))
        claim = mine.get(str(path))
        if claim is not None and (claim.key.size, claim.key.mtime_ns) == (seen.size, seen.mtime_ns):
            rows.append(_claimed(spec, claim, True))
        else:
            rows.append(_unclaimed(spec, seen, claim, serving))
    rows.extend(_claimed(spec, c, False) for p, c in sorted(mine.items()) if p not in present)
    return rows
