"""``sluiceway emit``: through the store in process (no API configured), and through the API of
a real ``sluiceway serve`` (slow)."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.cli_helpers import main_output, sluiceway
from tests.service.api_server import TOKEN
from tests.service.served import Home

FLOWS = """
from pathlib import Path

from runtime import Flow, Run, on_event

HOME = Path(__file__).resolve().parent.parent

loader = Flow("loader", triggers=[on_event("orders.landed")], params={"region": "eu"})
auditor = Flow("auditor", triggers=[on_event("orders.landed"), on_event("audit")])
nightly = Flow("nightly")


@loader.task
def load(run: Run) -> None:
    with open(HOME / "payloads.txt", "a") as fh:
        fh.write(f"{run.id} {run.trigger.name} {run.trigger.payload['file']}\\n")


@auditor.task
def audit(run: Run) -> None:
    pass


@nightly.task
def work() -> None:
    pass
"""


class Cli:
    """``main([...])`` with --flows and --db; (exit code, stdout, stderr)."""

    def __init__(self, home: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.flows = home / "flows"
        self.db = home / "history.db"
        self._capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        return main_output(self._capsys, *args, "--flows", str(self.flows), "--db", str(self.db))

    def runs(self) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.db)
        try:
            rows = conn.execute("SELECT id, flow, trigger, idempotency_key, state FROM runs")
            return [
                {"id": i, "flow": f, "trigger": json.loads(t), "key": k, "state": s}
                for i, f, t, k, s in rows
            ]
        finally:
            conn.close()


@pytest.fixture
def cli(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    (cli_env / "flows").mkdir()
    (cli_env / "flows" / "flows.py").write_text(FLOWS)
    return Cli(cli_env, capsys)


# --- through the store ---


def test_emit_queues_a_run_of_every_listening_flow(cli: Cli) -> None:
    code, out, err = cli("emit", "orders.landed", "--data", '{"file": "a.csv"}')
    assert code == 0, err
    assert out.split() == ["1", "2"]  # by flow name: auditor, loader
    assert "queued run 1 of auditor" in err
    assert "queued run 2 of loader" in err
    assert "no service is running" in err
    payload = {"kind": "event", "name": "orders.landed", "payload": {"file": "a.csv"}}
    assert cli.runs() == [
        {"id": 1, "flow": "auditor", "trigger": payload, "key": None, "state": "queued"},
        {"id": 2, "flow": "loader", "trigger": payload, "key": None, "state": "queued"},
    ]


def test_emit_with_a_key_makes_the_runs_once(cli: Cli) -> None:
    first = cli("emit", "orders.landed", "--data", '{"file": "b.csv"}', "--key", "b-1", "--json")
    second = cli("emit", "orders.landed", "--data", '{"file": "b.csv"}', "--key", "b-1", "--json")
    assert (first[0], second[0]) == (0, 0)
    assert json.loads(first[1]) == json.loads(second[1])
    answer = json.loads(first[1])
    assert answer["event"] == "orders.landed"
    assert [run["flow"] for run in answer["runs"]] == ["auditor", "loader"]
    assert {run["idempotency_key"] for run in answer["runs"]} == {"event:orders.landed:b-1"}
    assert answer["runs"][1]["params"] == {"region": "eu"}
    assert "already exists for key 'b-1'" in second[2]
    assert len(cli.runs()) == 2


def test_emit_without_data_sends_an_empty_object(cli: Cli) -> None:
    code, out, _ = cli("emit", "audit")
    assert (code, out.split()) == (0, ["1"])
    assert cli.runs()[0]["trigger"]["payload"] == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["emit", "orders.landed", "--data", "{file: 1}"], "--data '{file: 1}': not valid JSON"),
        (["emit", "orders.landed", "--key", ""], "--key must not be empty"),
        (["emit", "nobody"], "no flow listens to event 'nobody': no loaded flow has on_event"),
    ],
    ids=["bad-data", "empty-key", "no-listener"],
)
def test_emit_refuses_bad_input_with_exit_2(cli: Cli, args: list[str], message: str) -> None:
    code, out, err = cli(*args)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err
    assert not cli.db.exists() or cli.runs() == []


# --- through the API of a running service ---


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.slow
def test_emit_posts_to_the_api_of_the_running_service(tmp_path: Path) -> None:
    home = Home(tmp_path)
    (home.flows / "flows.py").write_text(FLOWS)
    api = {"SLUICEWAY_API_BIND": f"127.0.0.1:{free_port()}", "SLUICEWAY_API_TOKEN": TOKEN}
    where = ["--flows", str(home.flows), "--db", str(home.db)]
    try:
        served = home.serve(**api)
        served.wait_ready()
        done = sluiceway(
            "emit", "orders.landed", "--data", '{"file": "c.csv"}', *where, cwd=tmp_path, env=api
        )
        assert done.returncode == 0, done.stderr
        ids = [int(n) for n in done.stdout.split()]
        assert "does not answer" not in done.stderr  # it went through the API
        assert "no service is running" not in done.stderr
        lines = home.wait_lines("payloads.txt", f"{ids[1]} orders.landed c.csv")
        assert lines == [f"{ids[1]} orders.landed c.csv"]
        assert home.query("SELECT trigger FROM runs WHERE id = ?", ids[0]) == [
            ('{"kind":"event","name":"orders.landed","payload":{"file":"c.csv"}}',)
        ]

        wrong = sluiceway(
            "emit", "audit", *where, cwd=tmp_path, env={**api, "SLUICEWAY_API_TOKEN": "x" * 20}
        )
        assert wrong.returncode == 1
        assert "401: wrong bearer token" in wrong.stderr
        assert "SLUICEWAY_API_TOKEN" in wrong.stderr
        nobody = sluiceway("emit", "nobody", *where, cwd=tmp_path, env=api)
        assert nobody.returncode == 2
        assert "no loaded flow has on_event('nobody')" in nobody.stderr
        assert home.query("SELECT count(*) FROM runs") == [(2,)]
    finally:
        home.cleanup()


@pytest.mark.slow
def test_emit_goes_through_the_store_when_the_api_does_not_answer(tmp_path: Path) -> None:
    home = Home(tmp_path)
    (home.flows / "flows.py").write_text(FLOWS)
    api = {"SLUICEWAY_API_BIND": f"127.0.0.1:{free_port()}", "SLUICEWAY_API_TOKEN": TOKEN}
    where = ["--flows", str(home.flows), "--db", str(home.db)]
    done = sluiceway("emit", "audit", "--key", "k", *where, cwd=tmp_path, env=api)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1"]
    assert "does not answer" in done.stderr
    assert "queueing through the store" in done.stderr
    assert home.query("SELECT flow, idempotency_key FROM runs") == [("auditor", "event:audit:k")]
