"""Folder-watcher bench: the files() trigger's watcher alone, no store (prints, never asserts).

Run from the repository root:

    .venv/bin/python bench/files_watch.py                 # on a temp folder under /tmp
    .venv/bin/python bench/files_watch.py --dir /dev/shm  # on tmpfs: the watcher, not the disk
    .venv/bin/python bench/files_watch.py --burst 2000 --files 200   # quicker

Two figures:

* latency: files written one at a time, 10 ms apart; for each, the time from its last write
  (its mtime) to the watcher handing it over, minus ``stable_for``; p50 and p99.
* burst: N files dropped at once by another thread; seconds from the last write until every
  file was handed over, files lost (must be 0) and handed over twice, the event loop's lag
  p99 meanwhile (a 5 ms sleeper's lateness), and this process's peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

from plugins.triggers.files.spec import FilesSpec, resolve
from plugins.triggers.files.watching import FileFacts, FolderWatch
from runtime.abc import Binding

STABLE_FOR = 0.5


def spec_for(folder: Path, **options: object) -> FilesSpec:
    return resolve(Binding("bench", "files", {"folder": str(folder), **options}, folder, "b:1"))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def latency(folder: Path, count: int) -> None:
    handed: dict[Path, float] = {}
    everyone = anyio.Event()

    async def on_ready(files: list[FileFacts]) -> None:
        now = time.time()
        for f in files:
            handed.setdefault(f.path, now - f.mtime_ns / 1e9 - STABLE_FOR)
        if len(handed) >= count:
            everyone.set()

    watch = FolderWatch(spec_for(folder, stable_for=STABLE_FOR), on_ready=on_ready, report=print)
    async with anyio.create_task_group() as tg:
        await tg.start(watch.run)
        for i in range(count):
            (folder / f"l{i:05}.csv").write_text(f"{i}\n")
            await anyio.sleep(0.01)
        with anyio.move_on_after(30):
            await everyone.wait()
        tg.cancel_scope.cancel()
    ms = [v * 1000 for v in handed.values()]
    print(
        f"latency over {len(ms)} files (write -> handed over, minus stable_for={STABLE_FOR}s): "
        f"p50 {statistics.median(ms):.1f} ms, p99 {pct(ms, 0.99):.1f} ms, "
        f"missing {count - len(ms)}"
    )


DROP = """
import sys
from pathlib import Path
folder, count = Path(sys.argv[1]), int(sys.argv[2])
for i in range(count):
    (folder / f"b{i:05}.csv").write_text(f"{i}\\n")
"""


async def burst(folder: Path, count: int) -> None:
    seen: dict[Path, list[FileFacts]] = {}
    lags: list[float] = []
    everyone = anyio.Event()

    async def on_ready(files: list[FileFacts]) -> None:
        for f in files:
            seen.setdefault(f.path, []).append(f)
        if len(seen) >= count:
            everyone.set()

    async def probe() -> None:
        while True:
            before = time.monotonic()
            await anyio.sleep(0.005)
            lags.append(time.monotonic() - before - 0.005)

    spec = spec_for(folder, stable_for=STABLE_FOR)
    watch = FolderWatch(spec, on_ready=on_ready, report=print, rescan=3600)
    async with anyio.create_task_group() as tg:
        await tg.start(watch.run)
        tg.start_soon(probe)
        # another process drops them, as in life (a thread here would share the GIL)
        await anyio.run_process([sys.executable, "-c", DROP, str(folder), str(count)])
        done = time.monotonic()
        with anyio.move_on_after(600):
            await everyone.wait()
        finished = time.monotonic()
        tg.cancel_scope.cancel()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"burst of {count:,} files: all handed over {finished - done:.2f} s after the last "
        f"write (stable_for={STABLE_FOR}s); lost {count - len(seen)}, handed over twice "
        f"{sum(1 for offers in seen.values() if len(offers) > 1)}; loop lag p99 {pct(lags, 0.99) * 1000:.1f} "
        f"ms, max {max(lags) * 1000:.1f} ms; peak RSS {rss:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="where temp folders go")
    parser.add_argument("--files", type=int, default=1000, help="files for the latency")
    parser.add_argument("--burst", type=int, default=10_000, help="files in the burst")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        (Path(tmp) / "lat").mkdir()
        (Path(tmp) / "burst").mkdir()
        anyio.run(latency, Path(tmp) / "lat", args.files)
        anyio.run(burst, Path(tmp) / "burst", args.burst)


if __name__ == "__main__":
    main()
