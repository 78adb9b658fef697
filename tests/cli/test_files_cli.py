"""``sluiceway files FLOW`` ("why didn't my file run?") and ``sluiceway run FLOW --file
PATH``, in process on flow files, folders and SQLite files in a temporary folder."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import main_output

FLOWS = """
from __future__ import annotations

from pathlib import Path

from runtime import Flow, Run, files

ingest = Flow("ingest", params={"region": "eu"}, triggers=[files(
    "inbox", pattern="*.csv", stable_for="1h", on_success="move:done", on_failure="move:failed",
)])
plain = Flow("plain")


@ingest.task
def load(run: Run) -> int:
    text = Path(run.trigger.path).read_text()
    if "boom" in text:
        raise ValueError("bad rows")
    return len(text)


plain.task(name="work")(lambda: None)
"""

FIELDS = {
    "flow", "trigger", "path", "state", "why", "size", "mtime", "ready_at", "run_id",
    "run_state", "claimed_at", "moved_to",
}  # fmt: skip


class Cli:
    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.home = home
        self.db = home / "history.db"
        self.flows = home / "flows"
        self.inbox = self.flows / "inbox"
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        return main_output(self._capsys, *args, "--flows", str(self.flows), "--db", str(self.db))

    def rows(self) -> list[dict[str, Any]]:
        code, out, err = self("files", "ingest", "--json")
        assert code == 0, err
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    def drop(self, name: str, text: str = "id\n1\n", *, age: float = 0.0) -> Path:
        path = self.inbox / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if age:
            then = time.time() - age
            os.utime(path, (then, then))
        return path


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    (cli_env / "flows").mkdir()
    (cli_env / "flows" / "ingest.py").write_text(FLOWS)
    return Cli(cli_env, capsys)


def test_files_without_a_database_shows_each_file_and_why(cli: Cli) -> None:
    cli.drop("old.csv", age=7200)  # complete: unchanged longer than stable_for
    cli.drop("new.csv")  # just written: waits for stability
    cli.drop("notes.txt")
    cli.drop(".hidden.csv")
    cli.drop("upload.csv.part")
    rows = {Path(r["path"]).name: r for r in cli.rows()}
    assert all(set(r) == FIELDS for r in rows.values())
    assert rows["old.csv"]["state"] == "ready"
    assert "no service is running" in rows["old.csv"]["why"]
    assert rows["new.csv"]["state"] == "waiting"
    assert rows["new.csv"]["ready_at"] is not None
    assert rows["notes.txt"]["state"] == "ignored"
    assert "pattern" in rows["notes.txt"]["why"]
    assert rows[".hidden.csv"]["state"] == "ignored"
    assert rows["upload.csv.part"]["state"] == "ignored"
    assert {r["flow"] for r in rows.values()} == {"ingest"}
    assert not cli.db.exists()  # a look does not create the history


def test_files_table_names_trigger_and_states(cli: Cli) -> None:
    cli.drop("old.csv", age=7200)
    code, out, _ = cli("files", "ingest")
    assert code == 0
    assert "files(" in out
    assert "flows/ingest.py:" in out
    line = next(ln for ln in out.splitlines() if "old.csv" in ln)
    assert line.split()[0] == "ready"


def test_files_of_a_missing_folder_says_so(cli: Cli) -> None:
    (rows,) = [cli.rows()]
    assert [r["state"] for r in rows] == ["unreadable"]
    assert rows[0]["path"] == str(cli.inbox)
    assert "does not exist" in rows[0]["why"] or "missing" in rows[0]["why"], rows[0]["why"]


@pytest.mark.parametrize(
    ("flow", "message"),
    [("nope", "unknown flow 'nope'"), ("plain", "has no files() trigger")],
    ids=["unknown-flow", "no-files-trigger"],
)
def test_files_of_a_flow_without_files_trigger(cli: Cli, flow: str, message: str) -> None:
    code, out, err = cli("files", flow)
    assert code == 2
    assert message in err
    assert out == ""


def test_run_file_claims_runs_and_moves(cli: Cli) -> None:
    path = cli.drop("orders.csv", "id\n1\n2\n", age=7200)
    code, out, err = cli("run", "ingest", "--file", str(path), "--json")
    assert code == 0, err
    run = json.loads(out)
    st_size = len("id\n1\n2\n")
    assert run["trigger"]["kind"] == "file"
    assert run["trigger"]["path"] == str(path)
    assert run["trigger"]["size"] == st_size
    assert run["state"] == "succeeded"
    assert f"moved to {cli.flows / 'done' / 'orders.csv'}" in err
    assert not path.exists()
    (row,) = cli.rows()
    assert row["state"] == "moved"
    assert row["run_id"] == run["id"]
    assert row["moved_to"] == str(cli.flows / "done" / "orders.csv")


def test_run_file_twice_refuses_the_same_content(cli: Cli) -> None:
    path = cli.drop("orders.csv", age=7200)
    flows = cli.flows / "ingest.py"
    flows.write_text(FLOWS.replace('on_success="move:done"', "on_success=None"))
    code, _, err = cli("run", "ingest", "--file", str(path))
    assert code == 0, err
    code, _, err = cli("run", "ingest", "--file", str(path))
    assert code == 1
    assert "already claimed by run 1 (succeeded)" in err
    assert "sluiceway retry 1" in err
    (row,) = cli.rows()
    assert row["state"] == "claimed"
    assert row["run_state"] == "succeeded"
    conn = sqlite3.connect(cli.db)
    try:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)
    finally:
        conn.close()
    path.write_text("id\n1\n3\n")  # rewritten: new content, a new run
    code, _, err = cli("run", "ingest", "--file", str(path))
    assert code == 0, err


def test_run_file_failure_moves_to_failed_with_a_suffix(cli: Cli) -> None:
    (cli.flows / "failed").mkdir()
    (cli.flows / "failed" / "bad.csv").write_text("an earlier failure\n")
    path = cli.drop("bad.csv", "boom\n", age=7200)
    code, _, err = cli("run", "ingest", "--file", str(path))
    assert code == 1
    assert f"moved to {cli.flows / 'failed' / 'bad.1.csv'}" in err
    assert (cli.flows / "failed" / "bad.csv").read_text() == "an earlier failure\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plain", "--file", "x.csv"], "has no files() trigger"),
        (["ingest", "--file", "missing.csv"], "no such file"),
        (["ingest", "--file", "."], "not a regular file"),
        (["ingest", "--file", "x.csv", "--key", "k"], "--key cannot be used with --file"),
    ],
    ids=["no-files-trigger", "missing-file", "a-folder", "with-key"],
)
def test_run_file_refuses_bad_input(cli: Cli, args: list[str], message: str) -> None:
    cli.drop("x.csv")
    os.chdir(cli.inbox)
    code, _, err = cli("run", *args)
    assert code == 2
    assert message in err
    assert not cli.db.exists() or _runs(cli.db) == 0


def _runs(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
    finally:
        conn.close()


def test_a_file_from_run_file_is_not_claimed_again_by_the_trigger(cli: Cli) -> None:
    # what the service would do next: the content is claimed, so the claimer skips it
    path = cli.drop("a.csv", age=7200)
    flows = cli.flows / "ingest.py"
    flows.write_text(FLOWS.replace('on_success="move:done"', "on_success=None"))
    code, _, err = cli("run", "ingest", "--file", str(path))
    assert code == 0, err
    from runtime.store import claims, connect_reader

    conn = connect_reader(cli.db)
    try:
        st = path.stat()
        key = claims.FileKey(str(path), st.st_size, st.st_mtime_ns)
        assert claims.claimed_among(conn, "ingest", [key]) == {key}
    finally:
        conn.close()


def test_run_file_outside_the_folder_runs_and_leaves_the_file(cli: Cli) -> None:
    elsewhere = cli.home / "reprocess" / "orders.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text("id\n9\n")
    code, _, err = cli("run", "ingest", "--file", str(elsewhere))
    assert code == 0, err
    assert f"{elsewhere}: left in place (not in the trigger's folder)" in err
    assert elsewhere.exists()
    # the note comes after the run's own lines
    assert err.index("left in place") > err.index("run 1 of ingest succeeded")


def test_files_table_says_when_a_waiting_file_will_be_ready(cli: Cli) -> None:
    cli.drop("new.csv")
    code, out, _ = cli("files", "ingest")
    assert code == 0
    line = next(ln for ln in out.splitlines() if "new.csv" in ln)
    assert line.split()[0] == "waiting"
    assert "ready at 20" in line
