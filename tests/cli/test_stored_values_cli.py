"""Stored results and params through the real CLI (subprocesses, a SQLite file): `retry`
hands a downstream task the value its upstream returned, `--param` values are stored as the
run had them, and a param that cannot be stored is a usage error before any run exists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.test_cli import Cli

pytestmark = pytest.mark.slow  # every test here runs the sluiceway command as a subprocess

FLOWS = """
from __future__ import annotations

import math
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from runtime import Flow

HOME = Path(__file__).resolve().parent.parent

pair = Flow("pair")


@pair.task
def up() -> dict[Any, Any]:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    return {"when": when, "pair": (1, 2), 1: "x", "nan": math.nan}


@pair.task
def down(up: dict[Any, Any]) -> None:
    seen = HOME / "down.txt"
    with seen.open("a") as out:
        out.write(repr(up) + "\\n")
    if len(seen.read_text().splitlines()) == 1:
        raise ConnectionError("the warehouse is down")


params = Flow("params", params={"x": 0.0, "n": 0, "anything": None})


@params.task
def record(x: float, n: int, anything: Any) -> None:
    with (HOME / "params.txt").open("a") as out:
        out.write(repr((x, n, anything)) + "\\n")


defaults = Flow("defaults", params={"day": date(2026, 1, 2), "big": 2**80})


@defaults.task
def check(day: date, big: int) -> None:
    assert (day, big) == (date(2026, 1, 2), 2**80)
"""

UNSTORABLE = """
from runtime import Flow

bad = Flow("bad_default", params={"source": object()})


@bad.task
def use(source: object) -> None:
    pass
"""

BIG = "99999999999999999999999"


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "stored.py").write_text(FLOWS)
    return Cli(tmp_path, flows)


def test_retry_hands_down_what_the_upstream_returned(cli: Cli) -> None:
    """Issue 9, item 4: on retry `down` got a str, a list, the key '1' and None."""
    run_id = cli.run("pair", expect=1)
    done = cli("retry", str(run_id))
    assert done.returncode == 0, done.stderr
    first, second = (cli.home / "down.txt").read_text().splitlines()
    assert first == (
        "{'when': datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc), "
        "'pair': (1, 2), 1: 'x', 'nan': nan}"
    )
    assert second == first
    retried = cli.json("show", str(run_id + 1))
    up = next(t for t in retried["tasks"] if t["name"] == "up")
    assert up["state"] == "succeeded"
    assert up["reason"] == "result reused from an earlier attempt"
    assert cli("show", str(run_id + 1)).returncode == 0


def test_params_json_cannot_hold_are_stored_as_the_run_had_them(cli: Cli) -> None:
    """`--param x=nan` ran with NaN but was stored null; a long int failed with a traceback.
    Plain values are shown as before."""
    plain = cli.run("params", "--param", "x=1.5", "--param", "anything=[1, 2]")
    assert cli.json("show", str(plain))["params"] == {"x": 1.5, "n": 0, "anything": [1, 2]}
    assert 'params {"x":1.5,"n":0,"anything":[1,2]}' in cli("show", str(plain)).stdout

    run_id = cli.run("params", "--param", "x=nan", "--param", f"n={BIG}", "-p", f"anything={BIG}")
    assert (cli.home / "params.txt").read_text().splitlines()[1] == f"(nan, {BIG}, {BIG})"
    shown = cli.json("show", str(run_id))
    assert shown["params"] == {
        "x": {"__sluiceway__": "float", "value": "nan"},
        "n": {"__sluiceway__": "int", "value": BIG},
        "anything": {"__sluiceway__": "int", "value": BIG},
    }
    assert cli.json("runs")[0]["params"] == shown["params"]
    text = cli("show", str(run_id))
    assert f'params {{"x":nan,"n":{BIG},"anything":{BIG}}}' in text.stdout

    queued = cli.json("trigger", "params", "--param", "x=-inf", "--param", f"n=-{BIG}")
    assert cli.json("show", str(queued["id"]))["params"] == {
        "x": {"__sluiceway__": "float", "value": "-inf"},
        "n": {"__sluiceway__": "int", "value": f"-{BIG}"},
        "anything": None,
    }


def test_defaults_json_cannot_hold_are_shown_tagged(cli: Cli) -> None:
    listed = {f["name"]: f for f in cli.json("flows")}
    assert listed["defaults"]["params"] == {
        "day": {"__sluiceway__": "date", "value": "2026-01-02"},
        "big": {"__sluiceway__": "int", "value": str(2**80)},
    }
    assert listed["params"]["params"] == {"x": 0.0, "n": 0, "anything": None}
    run_id = cli.run("defaults")
    shown = cli("show", str(run_id)).stdout
    assert f'params {{"day":datetime.date(2026, 1, 2),"big":{2**80}}}' in shown


@pytest.mark.parametrize("command", ["run", "trigger"])
def test_a_param_that_cannot_be_stored_is_a_usage_error(cli: Cli, command: str) -> None:
    (cli.flows / "stored.py").unlink()
    (cli.flows / "bad.py").write_text(UNSTORABLE)
    done = cli(command, "bad_default")
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "flow 'bad_default': param 'source': object is not a type Sluiceway stores" in (
        done.stderr
    )
    assert not cli.db.exists() or json.loads(cli("runs", "--json").stdout) == []
