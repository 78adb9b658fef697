"""Flow files the service tests write into ``<tmp_path>/flows``.

Tasks write to files in the folder above ``flows/`` (the test's ``tmp_path``):
``started.txt`` gets ``<run_id> <task> <attempt>`` when an attempt starts, ``ledger.txt`` the
same line when it is about to succeed (fsynced, so a ``kill -9`` loses nothing written).
Tasks that must be caught mid-flight wait for a ``gate`` file the test creates.
"""

from __future__ import annotations

_PRELUDE = """
from __future__ import annotations

import os
from pathlib import Path

import anyio

from runtime import Flow, Run, every

HOME = Path(__file__).resolve().parent.parent


def note(file: str, run: Run, extra: str = "") -> None:
    with open(HOME / file, "a") as fh:
        fh.write(f"{run.id} {run.task} {run.attempt}{extra}\\n")
        fh.flush()
        os.fsync(fh.fileno())


async def gate() -> None:
    while not (HOME / "gate").exists():
        await anyio.sleep(0.05)
"""

# a -> b -> c, where b waits at the gate and may be retried twice, two runs at a time; a task
# that opts out of re-execution after a crash, and one without retries
CRASH = (
    _PRELUDE
    + """
chain = Flow("chain", max_active_runs=2)


@chain.task
def a(run: Run) -> int:
    note("started.txt", run)
    note("ledger.txt", run)
    return 1


@chain.task(retries=2, retry_delay="0.1s")
async def b(run: Run, a: int) -> int:
    note("started.txt", run)
    await gate()
    note("ledger.txt", run)
    return a + 1


@chain.task
def c(run: Run, b: int) -> int:
    note("started.txt", run)
    note("ledger.txt", run)
    return b + 1


fragile = Flow("fragile")


@fragile.task(on_crash="fail", retries=3, retry_delay="0.1s")
async def once(run: Run) -> None:
    note("started.txt", run)
    await gate()
    note("ledger.txt", run)


last_try = Flow("last_try")


@last_try.task
async def once_only(run: Run) -> None:
    note("started.txt", run)
    await gate()
    note("ledger.txt", run)
"""
)

# one task of about half a second, one of a minute (retried once, so a resumption can run)
DRAIN = (
    _PRELUDE
    + """
quick = Flow("quick")


@quick.task
async def brief(run: Run) -> None:
    note("started.txt", run)
    await anyio.sleep(0.5)
    note("ledger.txt", run)


long = Flow("long")


@long.task(retries=1, retry_delay="0.1s")
async def nap(run: Run) -> None:
    note("started.txt", run)
    await anyio.sleep(60)
    note("ledger.txt", run)
"""
)

# ``alpha`` reads its version from version.txt when the file is imported: the folder watcher
# ignores .txt files, so only a reload (SIGHUP, or an edit of a .py file) picks a new one up
ALPHA = (
    _PRELUDE
    + """
VERSION = (HOME / "flows" / "version.txt").read_text().strip()

alpha = Flow("alpha")


@alpha.task
def work(run: Run) -> None:
    note("ledger.txt", run, " " + VERSION)
"""
)

NEWFLOW = (
    _PRELUDE
    + """
newflow = Flow("newflow")


@newflow.task
def hello(run: Run) -> None:
    note("ledger.txt", run)
"""
)

TICK = (
    _PRELUDE
    + """
tick = Flow("tick", triggers=[every("1s")])


@tick.task
def beat(run: Run) -> None:
    note("ledger.txt", run)
"""
)

# a syntax error on line 3
BROKEN = """from runtime import Flow

def oops(:
"""

# a mapped task: items 0 and 1 succeed at once, item 2 waits at the gate; the kill lands there
MAPPED = (
    _PRELUDE
    + """
fan = Flow("fan")


@fan.task
def items(run: Run) -> list[int]:
    note("ledger.txt", run)
    return [0, 1, 2]


@fan.task(map="items", retries=1, retry_delay="0.1s")
async def each(run: Run, items: int) -> int:
    note("started.txt", run)
    if items == 2:
        await gate()
    note("ledger.txt", run)
    return items * 10


@fan.task
def total(run: Run, each: list[int]) -> int:
    note("ledger.txt", run)
    return sum(each)
"""
)

# the run queue: ``held`` is paused by the test, ``capped`` runs one at a time and waits at the
# gate, ``other`` must start whatever the backlog of the two
QUEUE = (
    _PRELUDE
    + """
held = Flow("held")


@held.task
def hold(run: Run) -> None:
    note("ledger.txt", run)


capped = Flow("capped", max_active_runs=1)


@capped.task
async def cap(run: Run) -> None:
    note("started.txt", run)
    await gate()
    note("ledger.txt", run)


other = Flow("other")


@other.task
def go(run: Run) -> None:
    note("ledger.txt", run)
"""
)

# ``typed`` notes its params with their types: a run queued while its file is broken still
# gets them typed after the defaults of the version the service runs
TYPED = (
    _PRELUDE
    + """
typed = Flow("typed", params={"n": 1, "tag": "x"})


@typed.task
def record(run: Run, n: int, tag: str) -> None:
    note("ledger.txt", run, f" {n!r} {tag!r}")
"""
)
