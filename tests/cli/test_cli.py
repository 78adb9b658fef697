"""The ``sluiceway`` console script end to end: real subprocesses on flow files and SQLite
files in a temporary folder, with SLUICEWAY_* cleared."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.cli.flows import BROKEN, DEMO, FINE
from tests.cli_helpers import killed_at_exit, sluiceway, spawn
from tests.waiting import WAIT, wait_until

pytestmark = pytest.mark.slow  # every test here runs the sluiceway command as a subprocess

REPO = Path(__file__).resolve().parents[2]


class Cli:
    """Runs ``sluiceway`` in *home* (no sluiceway.toml there) on its flows folder and db."""

    def __init__(self, home: Path, flows: Path) -> None:
        self.home = home
        self.flows = flows
        self.db = home / "history.db"

    def raw(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return sluiceway(*args, cwd=cwd or self.home)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``sluiceway ARGS --flows FLOWS --db DB``."""
        return self.raw(*args, "--flows", str(self.flows), "--db", str(self.db))

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def run(self, flow: str, *args: str, expect: int = 0) -> int:
        """Run *flow* and return the new run's id."""
        done = self("run", flow, *args)
        assert done.returncode == expect, done.stderr
        return int(self.json("runs", "--limit", "1")[0]["id"])


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "demo.py").write_text(DEMO)
    return Cli(tmp_path, flows)


@pytest.fixture
def broken(tmp_path: Path) -> Cli:
    flows = tmp_path / "broken_flows"
    flows.mkdir()
    (flows / "bad.py").write_text(BROKEN)
    (flows / "fine.py").write_text(FINE)
    return Cli(tmp_path, flows)


def _tasks(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """show --json's task items by label: ``load`` or ``load[3]``."""
    out = {}
    for task in run["tasks"]:
        label = task["name"] if "index" not in task else f"{task['name']}[{task['index']}]"
        out[label] = task
    return out


# --- help ---


@pytest.mark.parametrize(
    "command", [[], ["run"], ["retry"], ["validate"], ["flows"], ["runs"], ["show"], ["logs"]]
)
def test_help_on_every_command(cli: Cli, command: list[str]) -> None:
    done = cli.raw(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: sluiceway {' '.join(command)}".rstrip())
    assert "--db" in done.stdout
    assert "--flows" in done.stdout


# --- run ---


def test_run_succeeds_with_exit_0_and_progress(cli: Cli) -> None:
    done = cli("run", "ok")
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "run 1 of ok started (2 tasks)"
    assert any(line.split() == ["echo", "running"] for line in lines)
    assert "    echo | types int float bool str list" in lines
    assert lines[-1] == "run 1 of ok succeeded"
    (run,) = cli.json("runs")
    assert (run["id"], run["flow"], run["state"]) == (1, "ok", "succeeded")


def test_run_fails_with_exit_1_and_independent_branches_go_on(cli: Cli) -> None:
    done = cli("run", "fails")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == "run 1 of fails failed"
    run = cli.json("show", "1")
    tasks = _tasks(run)
    assert run["state"] == "failed"
    assert tasks["boom"]["state"] == "failed"
    assert tasks["boom"]["error"] == "ValueError: the source is empty"
    assert tasks["never"]["state"] == "upstream_failed"
    assert tasks["sibling"]["state"] == "succeeded"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope"], "unknown flow 'nope' (loaded flows: fails, flaky, ok, slow)"),
        (["run", "ok", "--param", "n"], "--param 'n': expected KEY=VALUE"),
        (["run", "ok", "--param", "n=three"], "--param n='three': invalid literal"),
        (["run", "ok", "--param", "flag=maybe"], "expected true or false"),
        (["run", "ok", "--param", "items={}"], "expected a JSON list"),
        (["run", "ok", "--param", "zz=1"], "flow 'ok' has no param 'zz'"),
        (["run"], "the following arguments are required: flow"),
        (["runs", "--limit", "0"], "--limit must be at least 1"),
        (["runs", "--state", "bogus"], "invalid choice: 'bogus'"),
    ],
    ids=[
        "unknown-flow",
        "param-without-value",
        "param-not-an-int",
        "param-not-a-bool",
        "param-not-a-list",
        "unknown-param",
        "missing-flow",
        "bad-limit",
        "bad-state",
    ],
)
def test_usage_errors_exit_2_without_making_a_run(cli: Cli, args: list[str], message: str) -> None:
    cli.run("ok")  # so the history exists and can be checked afterwards
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(cli.json("runs")) == 1


def test_running_a_flow_that_does_not_validate_exits_2(broken: Cli) -> None:
    done = broken("run", "cyc")
    assert done.returncode == 2, done.stderr
    assert "bad.py:" in done.stderr
    assert "has a cycle:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not broken.db.exists() or broken.json("runs") == []
    # one broken file does not stop a good flow beside it
    fine = broken("run", "fine")
    assert fine.returncode == 0, fine.stderr
    assert "warning: " in fine.stderr


def test_param_values_take_the_type_of_the_default(cli: Cli) -> None:
    params = ["n=3", "ratio=1.5", "flag=yes", "name=7", "items=[1, 2]"]
    run_id = cli.run("ok", *(arg for p in params for arg in ("--param", p)))
    (run,) = cli.json("runs")
    assert run["params"] == {"n": 3, "ratio": 1.5, "flag": True, "name": "7", "items": [1, 2]}
    logs = cli("logs", str(run_id), "--task", "echo")
    assert "types int float bool str list" in logs.stdout


def test_a_second_run_with_the_same_key_makes_no_new_run(cli: Cli) -> None:
    first = cli("run", "ok", "--key", "2026-01-02")
    second = cli("run", "ok", "--key", "2026-01-02", "-p", "n=5")
    assert (first.returncode, second.returncode) == (0, 0), second.stderr
    assert "started" not in second.stderr  # nothing ran
    assert second.stderr.splitlines()[-1] == "run 1 of ok succeeded"
    other = cli("run", "ok", "--key", "2026-01-03")
    assert other.returncode == 0
    runs = cli.json("runs")
    assert [(r["id"], r["idempotency_key"]) for r in runs] == [(2, "2026-01-03"), (1, "2026-01-02")]
    assert runs[1]["params"]["n"] == 2


# --- looking at history ---


def test_runs_lists_newest_first_with_filters(cli: Cli) -> None:
    cli.run("ok")
    cli.run("fails", expect=1)
    cli.run("ok", "-p", "n=9")
    runs = cli.json("runs")
    assert [(r["id"], r["flow"], r["state"]) for r in runs] == [
        (3, "ok", "succeeded"),
        (2, "fails", "failed"),
        (1, "ok", "succeeded"),
    ]
    for run in runs:
        assert {"id", "flow", "state", "params", "logical_date", "started_at", "ended_at"} <= set(
            run
        )
        assert run["logical_date"].endswith("Z")
        assert run["started_at"] <= run["ended_at"]
    assert runs[0]["params"]["n"] == 9
    assert [r["id"] for r in cli.json("runs", "--flow", "ok")] == [3, 1]
    assert [r["id"] for r in cli.json("runs", "--state", "failed")] == [2]
    assert [r["id"] for r in cli.json("runs", "--flow", "ok", "--state", "failed")] == []
    assert [r["id"] for r in cli.json("runs", "--limit", "1")] == [3]
    table = cli("runs", "--flow", "ok").stdout.splitlines()
    assert table[0].split() == ["ID", "FLOW", "STATE", "STARTED", "DURATION"]
    assert [line.split()[:3] for line in table[1:]] == [
        ["3", "ok", "succeeded"],
        ["1", "ok", "succeeded"],
    ]


def test_show_json_lists_tasks_and_mapped_instances(cli: Cli) -> None:
    tally = cli.home / "tally.txt"
    run_id = cli.run(
        "flaky", "-p", f"marker={cli.home / 'absent'}", "-p", f"tally={tally}", expect=1
    )
    run = cli.json("show", str(run_id))
    assert run["state"] == "failed"
    assert [(t["name"], t.get("index")) for t in run["tasks"]] == [
        ("parts", None),
        ("each", None),
        ("each", 0),
        ("each", 1),
        ("each", 2),
        ("total", None),
    ]
    for task in run["tasks"]:
        assert {"name", "state", "attempts", "started_at", "ended_at", "error"} <= set(task)
    tasks = _tasks(run)
    assert tasks["each[1]"]["state"] == "failed"
    assert tasks["each[1]"]["attempts"] == 1
    assert tasks["each[1]"]["error"] == "ConnectionError: partition 1 is not there yet"
    assert [tasks[f"each[{i}]"]["state"] for i in (0, 2)] == ["succeeded", "succeeded"]
    assert tasks["each"]["state"] == "failed"
    assert tasks["total"]["state"] == "upstream_failed"
    text = cli("show", str(run_id)).stdout
    assert "each[1]" in text
    assert "ConnectionError: partition 1 is not there yet" in text


def test_logs_of_a_run_a_task_and_an_instance(cli: Cli) -> None:
    tally = cli.home / "tally.txt"
    run_id = cli.run(
        "flaky", "-p", f"marker={cli.home / 'absent'}", "-p", f"tally={tally}", expect=1
    )
    out = cli("logs", str(run_id)).stdout
    every = out.splitlines()
    assert sum("INFO    each[" in line and ": item " in line for line in every) == 3
    assert sum("ERROR   each[1] #1: " in line for line in every) == 1
    assert "ConnectionError: partition 1 is not there yet" in out  # the stored traceback
    one = cli("logs", str(run_id), "--task", "each[1]").stdout.splitlines()
    assert one[0].endswith("INFO    each[1] #1: item 1")
    assert all(" each[1] #" in line for line in one if line[:1].isdigit())
    assert cli("logs", str(run_id), "--task", "parts").stdout == ""
    missing = cli("logs", "99")
    assert missing.returncode == 1
    assert missing.stderr == "sluiceway: run 99 not found\n"


def test_retry_reruns_only_what_failed(cli: Cli) -> None:
    marker, tally = cli.home / "marker", cli.home / "tally.txt"
    params = ["-p", f"marker={marker}", "-p", f"tally={tally}"]
    first = cli.run("flaky", *params, expect=1)
    tallied = tally.read_text().split()  # instances run at once: their order is not fixed
    assert tallied[0] == "parts"
    assert sorted(tallied[1:]) == ["each[0]", "each[1]", "each[2]"]
    marker.touch()  # partition 1 has arrived
    done = cli("retry", str(first))
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == f"run {first + 1} of flaky succeeded"
    # only the failed instance ran again; parts and the other instances were reused
    assert sorted(tally.read_text().split()) == sorted(
        ["parts", "each[0]", "each[1]", "each[2]", "each[1]"]
    )
    run = cli.json("show", str(first + 1))
    assert run["retry_of"] == first
    assert run["trigger"] == {"kind": "retry", "run_id": first}
    assert {t: v["state"] for t, v in _tasks(run).items()} == {
        "parts": "succeeded",
        "each": "succeeded",
        "each[0]": "succeeded",
        "each[1]": "succeeded",
        "each[2]": "succeeded",
        "total": "succeeded",
    }
    assert cli.json("show", str(first))["state"] == "failed"  # the old run stays as it was
    again = cli("retry", str(first + 1))
    assert again.returncode == 1
    assert "nothing to retry" in again.stderr
    assert "Traceback" not in again.stderr


# --- flows and validation ---


def test_validate_exit_codes_and_order(cli: Cli, broken: Cli) -> None:
    good = cli("validate")
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith("4 flow(s) OK")
    order = cli("validate", "--order")
    assert order.returncode == 0
    assert "flaky: parts -> each -> total" in order.stdout.splitlines()
    bad = broken("validate")
    assert bad.returncode == 1
    assert "has a cycle: a -> b -> a" in bad.stderr or "has a cycle: b -> a -> b" in bad.stderr
    assert "task 't' has parameter 'nope'" in bad.stderr
    for line in bad.stderr.splitlines():  # each problem names its file and line
        assert line.startswith(("broken_flows/bad.py:", "2 problem(s)")), bad.stderr


def test_flows_json(cli: Cli) -> None:
    cli.run("fails", expect=1)
    flows = {f["name"]: f for f in cli.json("flows")}
    assert sorted(flows) == ["fails", "flaky", "ok", "slow"]
    assert flows["flaky"]["tasks"] == ["parts", "each", "total"]
    assert flows["ok"]["params"]["n"] == 2
    assert (flows["fails"]["runs"], flows["fails"]["last_state"]) == (1, "failed")
    assert (flows["ok"]["runs"], flows["ok"]["last_run"]) == (0, None)


@pytest.mark.parametrize("command", [["runs"], ["show", "1"], ["logs", "1"]])
def test_a_missing_db_is_one_clear_message(cli: Cli, command: list[str]) -> None:
    done = cli(*command)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"sluiceway: {cli.db}: no such database (run a flow first, or pass --db)"
    ]
    assert not cli.db.exists()


def test_flags_before_the_command_are_used(cli: Cli) -> None:
    done = cli.raw("--flows", str(cli.flows), "--db", str(cli.db), "run", "ok")
    assert done.returncode == 0, done.stderr
    assert cli.db.exists()
    assert not (cli.home / "sluiceway.db").exists()
    listed = cli.raw("--db", str(cli.db), "runs", "--json")
    assert [r["flow"] for r in json.loads(listed.stdout)] == ["ok"]


# --- Ctrl-C ---


@contextmanager
def _slow_run(cli: Cli) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`sluiceway run slow` as a subprocess, yielded once its task is waiting; killed after."""
    done_file = cli.home / "report.txt"
    errors = cli.home / "stderr.txt"
    args = [
        "run",
        "slow",
        "-p",
        f"done={done_file}",
        "--flows",
        str(cli.flows),
        "--db",
        str(cli.db),
    ]
    with killed_at_exit(spawn(*args, cwd=cli.home, stderr=errors)) as proc:

        def waiting() -> bool:
            assert proc.poll() is None, errors.read_text()
            return "wait | waiting a long time" in errors.read_text()

        wait_until(waiting, "the task waiting", details=errors.read_text)
        yield proc, errors


def test_sigint_cancels_the_run_and_all_done_tasks_still_run(cli: Cli) -> None:
    with _slow_run(cli) as (proc, errors):
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=WAIT)
    stderr = errors.read_text()
    assert code == 130, stderr
    assert "cancelling the run" in stderr
    assert stderr.splitlines()[-1] == "run 1 of slow cancelled"
    run = cli.json("show", "1")
    tasks = _tasks(run)
    assert run["state"] == "cancelled"
    assert run["ended_at"] is not None
    assert tasks["wait"]["state"] == "cancelled"
    assert tasks["after_wait"]["state"] == "cancelled"
    assert tasks["report"]["state"] == "succeeded"
    assert (cli.home / "report.txt").read_text() == "report ran"


def test_cancel_from_another_shell_reaches_a_foreground_run(cli: Cli) -> None:
    with _slow_run(cli) as (proc, errors):
        cancel = cli("cancel", "1")
        assert cancel.returncode == 0, cancel.stderr
        code = proc.wait(timeout=WAIT)
    stderr = errors.read_text()
    assert code == 130, stderr
    assert "run 1 cancel requested: cancelling" in stderr
    tasks = _tasks(cli.json("show", "1"))
    assert (tasks["wait"]["state"], tasks["report"]["state"]) == ("cancelled", "succeeded")


# --- the shipped samples ---


def _warehouse(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(
            "SELECT day, region, product, orders, units, revenue_cents FROM daily_sales "
            "ORDER BY day, region, product"
        ).fetchall()
    finally:
        conn.close()


def test_sample_etl_is_idempotent(tmp_path: Path) -> None:
    sample = Cli(tmp_path, REPO / "sample_flows")
    warehouse = tmp_path / "warehouse.db"
    config = ["--config", str(REPO / "sluiceway.toml")]
    args = ["-p", f"warehouse={warehouse}", *config]
    sample.run("etl", *args)
    first = _warehouse(warehouse)
    sample.run("etl", *args)
    assert _warehouse(warehouse) == first
    assert len(first) > 0
    assert {row[0] for row in first} == {"2026-01-02"}
    # another day adds its rows; one region of a day replaces only that region's rows
    sample.run("etl", *args, "-p", "date=2026-01-03")
    both = _warehouse(warehouse)
    assert {row[0] for row in both} == {"2026-01-02", "2026-01-03"}
    sample.run("etl", *args, "-p", "region=EU")
    assert _warehouse(warehouse) == both
    runs = sample.json("runs", *config)
    assert [r["state"] for r in runs] == ["succeeded"] * 4
    logs = sample("logs", str(runs[-1]["id"]), "--task", "clean", *config).stdout
    assert "duplicate order id" in logs


def test_sample_flows_validate_clean() -> None:
    done = sluiceway("validate", "--flows", "sample_flows", cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.startswith("6 flow(s) OK")


def _interval(task: dict[str, Any]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(task["started_at"]), datetime.fromisoformat(task["ended_at"])


def test_sample_fanout_keeps_to_its_pool_and_retries(tmp_path: Path) -> None:
    sample = Cli(tmp_path, REPO / "sample_flows")
    config = ["--config", str(REPO / "sluiceway.toml")]  # sizes the warehouse pool to 2
    run_id = sample.run("fanout", "-p", "work_seconds=0.2", *config)
    tasks = _tasks(sample.json("show", str(run_id), *config))
    spans = [_interval(tasks[f"region_{r}"]) for r in ("eu", "us", "apac")]
    for start, _ in spans:  # never more than 2 region tasks at once
        assert sum(s <= start < e for s, e in spans) <= 2
    assert max(e for _, e in spans) - min(s for s, _ in spans) >= timedelta(seconds=0.4)
    assert tasks["publish"]["state"] == "succeeded"
    assert tasks["publish"]["attempts"] == 2


def test_sample_partitions_branches_on_new_files(tmp_path: Path) -> None:
    sample = Cli(tmp_path, REPO / "sample_flows")
    args = ["-p", f"ledger={tmp_path / 'ledger.json'}", "--config", str(REPO / "sluiceway.toml")]
    first = _tasks(sample.json("show", str(sample.run("partitions", *args)), *args[2:]))
    assert [first[f"summarize[{i}]"]["state"] for i in range(3)] == ["succeeded"] * 3
    assert first["nothing_new"]["state"] == "skipped"
    assert first["nothing_new"]["reason"] == "not chosen by route"
    second = _tasks(sample.json("show", str(sample.run("partitions", *args)), *args[2:]))
    assert {t: second[t]["state"] for t in ("summarize", "record", "nothing_new", "report")} == {
        "summarize": "skipped",
        "record": "skipped",
        "nothing_new": "succeeded",
        "report": "succeeded",
    }
