"""files() triggers in the real ``sluiceway serve`` as a subprocess: files dropped while it is
down, moves after success and failure, a path rewritten, ``kill -9`` in a storm, a burst."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.service.served import Home

pytestmark = pytest.mark.slow  # every test here starts sluiceway serve as a subprocess

FLOW = """
from __future__ import annotations

import os
from pathlib import Path

from runtime import Flow, Run, files

HOME = Path(__file__).resolve().parent.parent

ingest = Flow("ingest", triggers=[files(
    "../inbox", pattern="*.csv", stable_for="{stable_for}", on_success={on_success!r},
    on_failure={on_failure!r}, {extra}
)])


@ingest.task
def load(run: Run) -> int:
    trigger = run.trigger
    paths = [p["path"] for p in trigger.paths] if "paths" in trigger else [trigger.path]
    with open(HOME / "ledger.txt", "a") as fh:
        for path in paths:
            fh.write(f"{{run.id}} {{path}}\\n")
        fh.flush()
        os.fsync(fh.fileno())
    if any("boom" in Path(p).read_text() for p in paths):
        raise ValueError("bad rows")
    return len(paths)
"""


def write_flow(
    home: Home,
    *,
    stable_for: str = "1s",
    on_success: str | None = "move:../done",
    on_failure: str | None = "move:../failed",
    extra: str = "",
) -> Path:
    (home.flows / "ingest.py").write_text(
        FLOW.format(
            stable_for=stable_for, on_success=on_success, on_failure=on_failure, extra=extra
        )
    )
    inbox = home.root / "inbox"
    inbox.mkdir(exist_ok=True)
    return inbox


def drop(home: Home, name: str, text: str = "id\n1\n") -> Path:
    """Write a file elsewhere and rename it into the inbox: complete at once."""
    staging = home.root / "staging"
    staging.mkdir(exist_ok=True)
    tmp = staging / name
    tmp.write_text(text)
    target = home.root / "inbox" / name
    os.rename(tmp, target)
    return target


def ledger(home: Home) -> list[tuple[int, str]]:
    return [(int(a), b) for a, b in (line.split(" ", 1) for line in home.lines("ledger.txt"))]


def test_files_dropped_while_down_get_runs_at_start(home: Home) -> None:
    inbox = write_flow(home)
    an_hour_ago = time.time() - 3600  # they landed while the service was down
    for i in range(3):
        early = inbox / f"early{i}.csv"
        early.write_text(f"{i}\n")
        os.utime(early, (an_hour_ago, an_hour_ago))
    (inbox / ".hidden.csv").write_text("no\n")
    served = home.serve()
    served.wait_ready()
    # claimed before the service said ready
    assert len(home.query("SELECT id FROM file_claims")) == 3, served.describe()
    home.wait_rows(
        "SELECT COUNT(*) FROM file_claims WHERE outcome = 'moved'",
        what="3 files moved to done",
        until=lambda rows: rows == [(3,)],
    )
    assert sorted(p.name for p in (home.root / "done").iterdir()) == [
        "early0.csv", "early1.csv", "early2.csv"
    ]  # fmt: skip
    assert sorted(p.name for p in inbox.iterdir()) == [".hidden.csv"]
    shown = home.cli("runs", "--flow", "ingest", "--json")
    assert shown.returncode == 0, shown.stderr
    kinds = {r["trigger"]["kind"] for r in json.loads(shown.stdout)}
    assert kinds == {"file"}


def test_moves_on_success_and_on_failure_with_a_name_clash(home: Home) -> None:
    write_flow(home)
    (home.root / "failed").mkdir()
    (home.root / "failed" / "bad.csv").write_text("yesterday's failure\n")
    served = home.serve()
    served.wait_ready()
    drop(home, "good.csv")
    drop(home, "bad.csv", "boom\n")
    rows = home.wait_rows(
        "SELECT path, outcome, moved_to FROM file_claims WHERE settled_at IS NOT NULL "
        "ORDER BY path",
        what="both files settled",
        until=lambda rows: len(rows) == 2,
    )
    inbox = home.root / "inbox"
    assert rows == [
        (str(inbox / "bad.csv"), "moved", str(home.root / "failed" / "bad.1.csv")),
        (str(inbox / "good.csv"), "moved", str(home.root / "done" / "good.csv")),
    ], served.describe()
    assert (home.root / "failed" / "bad.csv").read_text() == "yesterday's failure\n"
    assert (home.root / "failed" / "bad.1.csv").read_text() == "boom\n"
    listed = home.cli("files", "ingest", "--json")
    assert listed.returncode == 0, listed.stderr
    states = {Path(r["path"]).name: r["state"] for r in json.loads(listed.stdout)}
    assert states == {"bad.csv": "moved", "good.csv": "moved"}


def test_the_same_path_rewritten_runs_again(home: Home) -> None:
    write_flow(home, on_success=None, on_failure=None)
    served = home.serve()
    served.wait_ready()
    drop(home, "daily.csv", "v1\n")
    home.wait_rows(
        "SELECT state FROM runs", what="the first run", until=lambda r: r == [("succeeded",)]
    )
    drop(home, "daily.csv", "version 2\n")
    home.wait_rows(
        "SELECT state FROM runs",
        what="a second run for the new content",
        until=lambda r: r == [("succeeded",), ("succeeded",)],
    )
    sizes = [row[0] for row in home.query("SELECT size FROM file_claims ORDER BY id")]
    assert sizes == [3, 10]
    # a restart rescans the folder: the content is claimed, nothing runs again
    served.kill9()
    again = home.serve()
    again.wait_ready()
    assert len(home.query("SELECT id FROM runs")) == 2, again.describe()


def _storm(home: Home, count: int) -> None:
    staging = home.root / "staging"
    staging.mkdir(exist_ok=True)
    for i in range(count):
        (staging / f"f{i:05}.csv").write_text(f"{i}\n")
    inbox = home.root / "inbox"
    for i in range(count):
        os.rename(staging / f"f{i:05}.csv", inbox / f"f{i:05}.csv")


def _exactly_once(home: Home, count: int) -> None:
    claims = home.query("SELECT path, run_id FROM file_claims")
    paths = Counter(path for path, _ in claims)
    assert len(paths) == count
    assert max(paths.values()) == 1
    runs = home.query("SELECT id, trigger FROM runs")
    assert len(runs) == count
    run_paths = Counter(json.loads(t)["path"] for _, t in runs)
    assert set(run_paths) == set(paths)
    assert max(run_paths.values()) == 1


def test_kill_9_during_a_storm_then_restart_runs_every_file_once(home: Home) -> None:
    count = 1_000
    write_flow(home, on_success=None, on_failure=None)
    served = home.serve()
    served.wait_ready()
    _storm(home, count)
    home.wait_rows(
        "SELECT COUNT(*) FROM file_claims",
        what="the storm partly claimed",
        until=lambda rows: rows[0][0] >= 1,
    )
    served.kill9()
    again = home.serve()
    again.wait_ready()  # the start-up scan claims the rest before ready
    home.wait_rows(
        "SELECT COUNT(*) FROM runs WHERE state = 'succeeded'",
        what="every file's run succeeded",
        until=lambda rows: rows == [(count,)],
        timeout=120,
    )
    _exactly_once(home, count)
    # a run the kill interrupted runs its task again (at least once); none is missing
    assert {path for _, path in ledger(home)} == {
        str(home.root / "inbox" / f"f{i:05}.csv") for i in range(count)
    }


def test_a_burst_of_2000_files_none_lost_none_twice(home: Home) -> None:
    count = 2_000
    write_flow(home, on_success="move:../done", on_failure="move:../failed")
    served = home.serve()
    served.wait_ready()
    _storm(home, count)
    home.wait_rows(
        "SELECT COUNT(*) FROM file_claims WHERE outcome = 'moved'",
        what="every file run and moved",
        until=lambda rows: rows == [(count,)],
        timeout=180,
    )
    _exactly_once(home, count)
    assert len(list((home.root / "done").iterdir())) == count
    assert list((home.root / "inbox").iterdir()) == []
    assert "Traceback" not in served.log()


def test_a_batch_trigger_makes_one_run_for_the_files_of_its_window(home: Home) -> None:
    write_flow(home, on_success=None, on_failure=None, extra='batch="1s"')
    served = home.serve()
    served.wait_ready()
    for i in range(5):
        drop(home, f"b{i}.csv")
    rows = home.wait_rows(
        "SELECT COUNT(*) FROM file_claims", what="5 claims", until=lambda r: r == [(5,)]
    )
    assert rows
    runs = home.query("SELECT trigger FROM runs")
    counts = [json.loads(t)["count"] for (t,) in runs]
    assert sum(counts) == 5
    assert len(runs) <= 2, served.describe()  # one window, or two if the drops spanned one
