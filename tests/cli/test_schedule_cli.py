"""``sluiceway next``, ``pause``/``unpause`` and ``serve --dry-run``, in process on flow files
and SQLite files in a temporary folder (no SLUICEWAY_* variables, no sluiceway.toml)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio
import pytest

from runtime.clock import SystemClock
from runtime.store import open_store
from tests.cli_helpers import main_output
from tests.store.rows import peek

FLOWS = """
from __future__ import annotations

from runtime import Flow, cron, every

noon = Flow("noon", triggers=[cron("0 12 * * *", tz="Europe/Amsterdam")])
both = Flow("both", triggers=[cron("@daily"), every("6h")])
hourly = Flow("hourly", triggers=[every("1h")], catchup="latest")
plain = Flow("plain")

for flow in (noon, both, hourly, plain):
    flow.task(name="work")(lambda: None)
"""


class Cli:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.db = home / "history.db"
        self.flows = home / "flows"
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        return main_output(self._capsys, *args, "--flows", str(self.flows), "--db", str(self.db))


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    (cli_env / "flows").mkdir()
    (cli_env / "flows" / "schedules.py").write_text(FLOWS)
    return Cli(cli_env, capsys)


# --- next ---


def test_next_json_is_a_list_of_utc_and_local(cli: Cli) -> None:
    code, out, _ = cli("next", "both", "-n", "5", "--json")
    assert code == 0
    items = json.loads(out)
    assert len(items) == 5
    for item in items:
        assert set(item) == {"utc", "local"}
        assert item["utc"].endswith("Z")
        assert datetime.fromisoformat(item["utc"]) == datetime.fromisoformat(item["local"])
    instants = [datetime.fromisoformat(i["utc"]) for i in items]
    # both triggers merged in time order; @daily's midnight coincides with every("6h")
    assert instants == sorted(instants)
    assert all(t.hour % 6 == 0 and t.minute == 0 for t in instants)
    assert sum(1 for t in instants if t.hour == 0) == 2


def test_next_local_offsets_follow_dst(cli: Cli) -> None:
    code, out, _ = cli("next", "noon", "-n", "400", "--json")
    assert code == 0
    items = json.loads(out)
    amsterdam = ZoneInfo("Europe/Amsterdam")
    offsets = set()
    for item in items:
        local = datetime.fromisoformat(item["local"])
        utc = datetime.fromisoformat(item["utc"])
        assert (local.hour, local.minute) == (12, 0)  # noon on the wall, winter and summer
        assert local.utcoffset() == utc.astimezone(amsterdam).utcoffset()
        offsets.add(item["local"][-6:])
    assert offsets == {"+01:00", "+02:00"}  # 400 days span both changes


def test_next_text_shows_local_utc_and_trigger(cli: Cli) -> None:
    code, out, _ = cli("next", "noon", "-n", "3")
    assert code == 0
    head, *lines = out.splitlines()
    assert head.split() == ["LOCAL", "(Europe/Amsterdam)", "UTC", "TRIGGER"]
    assert len(lines) == 3
    for line in lines:
        local, utc, trigger = line.split(maxsplit=2)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT12:00:00\+0[12]:00", local)
        assert datetime.fromisoformat(local) == datetime.fromisoformat(utc)
        assert trigger == "cron('0 12 * * *', tz='Europe/Amsterdam')"


def test_next_of_a_flow_without_triggers_exits_1(cli: Cli) -> None:
    code, out, err = cli("next", "plain")
    assert (code, out) == (1, "")
    assert "flow 'plain' has no time triggers" in err


def test_next_of_an_unknown_flow_exits_2(cli: Cli) -> None:
    code, _, err = cli("next", "nope")
    assert code == 2
    assert "unknown flow 'nope'" in err


# --- pause, unpause ---


def test_pause_and_unpause_persist_and_are_idempotent(cli: Cli) -> None:
    assert cli("pause", "hourly")[:2] == (
        0,
        "paused flow 'hourly': it creates no scheduled runs until unpaused\n",
    )
    assert peek(cli.db, "SELECT flow FROM paused") == [("hourly",)]
    code, out, _ = cli("flows", "--json")
    listed = {row["name"]: row for row in json.loads(out)}
    assert (listed["hourly"]["paused"], listed["hourly"]["triggers"]) == (
        True,
        [{"kind": "every", "seconds": 3600.0, "start": None}],
    )
    assert listed["plain"]["paused"] is False
    assert cli("pause", "hourly")[:2] == (0, "flow 'hourly' was already paused\n")
    assert peek(cli.db, "SELECT flow FROM paused") == [("hourly",)]
    code, out, _ = cli("unpause", "hourly")
    assert code == 0
    assert out.startswith("unpaused flow 'hourly': missed instants follow catchup='latest'")
    assert peek(cli.db, "SELECT flow FROM paused") == []
    assert cli("unpause", "hourly")[:2] == (0, "flow 'hourly' was not paused\n")


def test_pause_of_an_unknown_flow_exits_2_and_writes_nothing(cli: Cli) -> None:
    code, _, err = cli("pause", "nope")
    assert code == 2
    assert "unknown flow 'nope'" in err
    assert not cli.db.exists()


# --- serve --dry-run ---


def test_dry_run_without_a_database_creates_none(cli: Cli) -> None:
    code, out, _ = cli("serve", "--dry-run")
    assert code == 0
    assert not cli.db.exists()
    assert "3 scheduled flow(s)" in out
    assert "every trigger is new" in out
    assert "hourly  every('1h')  catchup=latest max_catchup=100" in out
    assert "plain" not in out


def test_dry_run_shows_catch_up_from_the_stored_cursor_and_writes_nothing(cli: Cli) -> None:
    now = SystemClock().now()
    last = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    last_iso = last.isoformat().replace("+00:00", "Z")

    async def seed() -> None:
        async with open_store(cli.db) as store:

            def op(db: sqlite3.Connection) -> None:
                db.execute(
                    "INSERT INTO schedules VALUES ('hourly', ?, ?, ?)",
                    ("every('1h')", last_iso, last_iso),
                )
                db.execute("INSERT INTO paused VALUES ('noon', ?)", (last_iso,))

            await store.writer.submit(op)

    anyio.run(seed)
    before = peek(cli.db, "SELECT * FROM schedules")
    code, out, _ = cli("serve", "--dry-run")
    assert code == 0
    hourly = out.split("hourly  every('1h')")[1].split("\n\n")[0]
    assert f"cursor: {last.isoformat()} ({last_iso})" in hourly
    assert "would fire 1 run(s):" in hourly
    skipped = re.search(r"would skip (\d+) missed instant\(s\)", hourly)
    assert skipped is not None
    assert int(skipped[1]) >= 4
    noon = out.split("noon  cron(")[1].split("\n\n")[0]
    assert "paused: fires nothing" in noon
    assert peek(cli.db, "SELECT * FROM schedules") == before
    assert peek(cli.db, "SELECT COUNT(*) FROM runs") == [(0,)]
