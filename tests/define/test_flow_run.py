"""``Flow.run()`` and ``Flow.arun()``: the flow runs to the end against the configured store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from runtime import Flow, Run
from runtime.errors import ParamError
from runtime.states import RunState, TaskState


def make_flow() -> Flow:
    orders = Flow("orders", params={"region": "eu"})

    @orders.task
    async def extract(run: Run, region: str) -> list[str]:
        run.log.info("extracting %s", region)
        return [region, region]

    @orders.task
    def load(extract: list[str]) -> int:
        return len(extract)

    return orders


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory with no config and no SLUICEWAY_* variables."""
    for name in [n for n in __import__("os").environ if n.startswith("SLUICEWAY_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_run_returns_the_finished_run_and_writes_sluiceway_db(in_tmp: Path) -> None:
    result = make_flow().run(region="us")
    assert result.state is RunState.SUCCEEDED
    assert result.tasks["load"].state is TaskState.SUCCEEDED
    assert (result["extract"], result["load"]) == (["us", "us"], 2)
    with sqlite3.connect(in_tmp / "sluiceway.db") as db:  # the default file, committed
        assert db.execute("SELECT flow, state, params FROM runs").fetchall() == [
            ("orders", "succeeded", '{"region":"us"}')
        ]
        assert db.execute("SELECT message FROM logs").fetchall() == [("extracting us",)]


async def test_arun_inside_a_loop_honours_sluiceway_db(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLUICEWAY_DB", str(in_tmp / "elsewhere.db"))
    result = await make_flow().arun()
    assert result.results == {"extract": ["eu", "eu"], "load": 2}
    assert (in_tmp / "elsewhere.db").exists()
    assert not (in_tmp / "sluiceway.db").exists()


def test_run_rejects_an_unknown_param(in_tmp: Path) -> None:
    with pytest.raises(ParamError, match="flow 'orders' has no param 'regoin'"):
        make_flow().run(regoin="us")


# run in a fresh interpreter: a flow file's `import runtime` and `Flow(...)` leave the engine
# unimported (the definition layer never imports it); `flow.run()` imports it when it runs
FRESH = """
import json, sys
from runtime import Flow

flow = Flow("fresh", params={"n": 2})

@flow.task
def double(n):
    return n * 2

engine = "runtime.engine.execution"
before = engine in sys.modules
result = flow.run(n=21)
print(json.dumps({"before": before, "after": engine in sys.modules,
                  "state": str(result.state), "double": result["double"]}))
"""


@pytest.mark.slow
def test_run_works_from_a_fresh_interpreter_that_never_imported_the_engine(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICEWAY_")}
    env["PYTHONPATH"] = str(Path(runtime.__file__).resolve().parent.parent)
    done = subprocess.run(
        [sys.executable, "-c", FRESH],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "before": False,
        "after": True,
        "state": "succeeded",
        "double": 42,
    }
    assert (tmp_path / "sluiceway.db").exists()
