"""Flow files that would end, crash or stall ``sluiceway serve`` (issue 9, item 10): a real
service, real flow files added to its folder while it serves; waits poll against deadlines."""

from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import pytest

from tests.service.flows import ALPHA, NEWFLOW
from tests.service.served import Home, Served
from tests.waiting import wait_until

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess

# the last line of each ends the process that imports it
OS_EXIT = "import os\n\nos._exit(0)\n"  # the loader's guard turns it into an import error
SEGFAULT = "import ctypes\n\nctypes.string_at(0)\n"  # only a child process can find these
POSIX_EXIT = "import posix\n\nposix._exit(0)\n"

ENDERS = {
    "os-exit": (OS_EXIT, "flows/ends.py:3: cannot import: it calls os._exit(0), which would end"),
    "segfault": (SEGFAULT, "flows/ends.py:3: importing it crashes the process (killed by signal "),
    "posix-exit": (POSIX_EXIT, "flows/ends.py:1: importing it ends the process (exit code 0)"),
}


def serve_alpha(home: Home) -> tuple[Served, Path]:
    """A service with the alpha flow; and a folder with only alpha, for the CLI's trigger (it
    imports the folder it is given in-process, so not one holding a file that ends it)."""
    good = home.root / "good_flows"
    good.mkdir()
    for folder in (home.flows, good):
        (folder / "version.txt").write_text("v1")
        (folder / "alpha.py").write_text(ALPHA)
    return home.serve(), good


def run_succeeds(home: Home, flow: str, folder: Path) -> None:
    run = home.trigger(flow, flows=folder)
    home.wait_rows(
        "SELECT state FROM runs WHERE id = ? AND state = 'succeeded'",
        run,
        what=f"run {run} of {flow} succeeded",
        timeout=30,
    )


@pytest.mark.parametrize(("source", "said"), ENDERS.values(), ids=ENDERS.keys())
def test_a_flow_file_that_would_end_the_service_is_reported_and_serving_goes_on(
    home: Home, source: str, said: str
) -> None:
    served, good = serve_alpha(home)
    served.wait_ready(timeout=30)

    (home.flows / "ends.py").write_text(source)
    served.wait_log(f"reload: {said}", timeout=60)

    assert served.proc.poll() is None, served.describe()
    run_succeeds(home, "alpha", good)
    (home.flows / "newflow.py").write_text(NEWFLOW)  # and it still reloads
    served.wait_log("added ['newflow']", timeout=60)
    assert served.proc.poll() is None, served.describe()


def test_a_flow_file_that_crashes_at_start_is_reported_and_the_service_starts(
    home: Home,
) -> None:
    (home.flows / "ends.py").write_text(SEGFAULT)
    served, good = serve_alpha(home)

    served.wait_ready(timeout=30)

    log = served.log()
    assert "flows/ends.py:3: importing it crashes the process (killed by signal SIGSEGV)" in log
    run_succeeds(home, "alpha", good)


PULSE = """
import time
from pathlib import Path

import anyio

from runtime import Flow, every

HOME = Path(__file__).resolve().parent.parent

tick = Flow("tick", triggers=[every("1s")])


@tick.task
def beat() -> None:
    return None


pulse = Flow("pulse")


@pulse.task
async def heartbeat() -> None:
    # the event loop's heartbeat: a timestamp every 50 ms until the gate opens (2 min at most)
    deadline = time.monotonic() + 120
    with open(HOME / "pulse.txt", "a") as fh:
        while not (HOME / "gate").exists() and time.monotonic() < deadline:
            fh.write(f"{time.time()}\\n")
            fh.flush()
            await anyio.sleep(0.05)
"""

SLOW = """
import os
import time
from pathlib import Path

from runtime import Flow

HOME = Path(__file__).resolve().parent.parent


def mark(what: str) -> None:
    with open(HOME / "slow-import.txt", "a") as fh:
        fh.write(f"{os.getpid()} {what} {time.time()}\\n")


mark("start")
time.sleep(4)  # a slow import: a big library, a network call at import
mark("end")

slow = Flow("slow")


@slow.task
def only() -> None:
    return None
"""


def test_a_slow_flow_file_import_does_not_stall_runs_or_the_scheduler(home: Home) -> None:
    (home.flows / "pulse.py").write_text(PULSE)
    served = home.serve()
    served.wait_ready(timeout=30)
    home.trigger("pulse")
    wait_until(lambda: home.lines("pulse.txt"), "the heartbeat task beating", timeout=30)

    (home.flows / "slow.py").write_text(SLOW)
    served.wait_log("added ['slow']", timeout=90)
    home.open_gate()

    # the import in the service's own process (the child process's check imports it first)
    marks = {
        what: float(at)
        for pid, what, at in (line.split() for line in home.lines("slow-import.txt"))
        if int(pid) == served.pid
    }
    start, end = marks["start"], marks["end"]
    assert end - start >= 4
    beats = [t for t in map(float, home.lines("pulse.txt")) if start < t < end]
    points = [start, *beats, end]
    worst = max(b - a for a, b in itertools.pairwise(points))
    # beats every 50 ms; an import on the loop would stop them for all 4 s, a loaded machine
    # delays some of them a little
    assert worst < 2, f"the loop stalled {worst:.2f}s during the import; beats {beats}"
    assert len(beats) >= 10, beats
    # scheduled runs were created, run and ended while the file imported
    ended = [
        datetime.fromisoformat(at).timestamp()
        for (at,) in home.query(
            "SELECT ended_at FROM runs WHERE flow = 'tick' AND state = 'succeeded'"
        )
    ]
    assert any(start < at < end for at in ended), (start, end, ended, served.describe())
    assert served.proc.poll() is None
