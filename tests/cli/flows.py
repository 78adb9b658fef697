"""Flow files the CLI tests write into a temporary folder."""

from __future__ import annotations

DEMO = """
from __future__ import annotations

from pathlib import Path

import anyio

from runtime import Flow, Run

ok = Flow("ok", params={"n": 2, "ratio": 0.5, "flag": False, "name": "x", "items": [1]})


@ok.task
def echo(run: Run, n: int, ratio: float, flag: bool, name: str, items: list[int]) -> str:
    got = " ".join(type(v).__name__ for v in (n, ratio, flag, name, items))
    run.log.info("types %s", got)
    return got


@ok.task
async def second(run: Run, echo: str) -> None:
    run.log.info("second task")


fails = Flow("fails")


@fails.task
def boom() -> None:
    raise ValueError("the source is empty")


@fails.task
def never(boom: None) -> None:
    pass


@fails.task
def sibling() -> str:
    return "independent"


flaky = Flow("flaky", params={"marker": "", "tally": ""})


def _tally(path: str, what: str) -> None:
    with open(path, "a") as fh:
        fh.write(what + "\\n")


@flaky.task
def parts(tally: str) -> list[int]:
    _tally(tally, "parts")
    return [0, 1, 2]


@flaky.task(map="parts")
def each(run: Run, parts: int, marker: str, tally: str) -> int:
    _tally(tally, f"each[{parts}]")
    run.log.info("item %d", parts)
    if parts == 1 and not Path(marker).exists():
        raise ConnectionError("partition 1 is not there yet")
    return parts * 10


@flaky.task
def total(each: list[int]) -> int:
    return sum(each)


slow = Flow("slow", params={"done": ""})


@slow.task
async def wait(run: Run) -> None:
    run.log.info("waiting a long time")
    await anyio.sleep(120)


@slow.task
async def after_wait(wait: None) -> None:
    pass


@slow.task(run_if="all_done")
def report(run: Run, wait: None, done: str) -> None:
    Path(done).write_text("report ran")
    run.log.info("report ran")
"""

BROKEN = """
from __future__ import annotations

from runtime import Flow

cyc = Flow("cyc")


@cyc.task
def a(b: int) -> int:
    return b


@cyc.task
def b(a: int) -> int:
    return a


stray = Flow("stray")


@stray.task
def t(nope: int) -> int:
    return nope
"""

FINE = """
from __future__ import annotations

from runtime import Flow

fine = Flow("fine")


@fine.task
def only() -> int:
    return 1
"""
