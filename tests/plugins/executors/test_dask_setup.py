"""executor= and [executors.dask] checked before anything runs (file:line, the config file), and
Dask never imported unless a task uses it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from plugins.executors.dask import DaskExecutor
from runtime import Flow
from runtime.config import load_config
from runtime.define.loader import load_flows
from runtime.errors import ConfigError

GOOD: dict[str, Any] = {"address": "tcp://127.0.0.1:8786"}


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "give exactly one of address"),
        ({"address": "tcp://a:1", "local": {}}, "give exactly one of address"),
        ({"address": "a:1"}, "address must be a scheduler address like 'tcp://host:8786'"),
        ({"local": {"workers": 0}}, "local.workers must be a whole number >= 1, not 0"),
        ({"local": {"gpus": 1}}, "unknown local option 'gpus'"),
        ({"local": {"processes": "yes"}}, "local.processes must be true or false"),
        ({**GOOD, "connect_timeout": "soon"}, "connect_timeout"),
        ({**GOOD, "retries": 3}, "unknown option 'retries'"),
    ],
    ids=[
        "none",
        "both",
        "bad-address",
        "no-workers",
        "unknown-local",
        "processes",
        "duration",
        "unknown",
    ],
)
def test_options_are_checked(options: dict[str, Any], problem: str) -> None:
    found = DaskExecutor.check_options(options)
    assert any(problem in p for p in found), found


def test_good_options_have_no_problems() -> None:
    assert DaskExecutor.check_options(GOOD) == []
    assert DaskExecutor.check_options({"local": {"workers": 2, "threads_per_worker": 1}}) == []


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_config_reads_executor_tables(tmp_path: Path) -> None:
    write(
        tmp_path / "sluiceway.toml",
        """
        [executors.dask]
        local = { workers = 2, threads_per_worker = 1 }
        connect_timeout = "5s"
        """,
    )
    config = load_config(cwd=tmp_path, env={})
    assert config.executors == {
        "dask": {"local": {"workers": 2, "threads_per_worker": 1}, "connect_timeout": "5s"}
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[executors.nope]\naddress = 'x'", "[executors.nope]: unknown plugin 'nope'"),
        ("[executors.local]\nx = 1", "the local executor is built in and takes no options"),
        ("[executors.dask]\naddress = 'nowhere'", "[executors.dask]: address must be"),
        ("executors = 3", "executors must be tables like [executors.dask]"),
    ],
    ids=["unknown-plugin", "local", "bad-option", "not-a-table"],
)
def test_config_problems_name_the_file_and_table(tmp_path: Path, table: str, message: str) -> None:
    file = write(tmp_path / "sluiceway.toml", table + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(cwd=tmp_path, env={})
    assert str(caught.value).startswith(str(file))
    assert message in str(caught.value)


def test_an_unconfigured_executor_is_a_load_problem_with_file_and_line(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    write(
        flows / "remote.py",
        """
        from runtime import Flow

        flow = Flow("remote")

        @flow.task(executor="dask")
        def heavy() -> int:
            return 1

        @flow.task(resources={"MEM": 1e9})
        def local_with_resources() -> int:
            return 2

        @flow.task(executor=3)
        def bad_name() -> int:
            return 3
        """,
    )
    loaded = load_flows(flows, executors={})
    assert "remote" not in loaded.flows
    problems = "\n".join(loaded.problems)
    assert (
        "remote.py:7: task 'heavy' uses executor 'dask', which is not configured: add an "
        "[executors.dask] table to sluiceway.toml (available: local)"
    ) in problems
    assert "remote.py:11: task 'local_with_resources': resources= applies to a task run by" in (
        problems
    )
    assert "remote.py:15: task 'bad_name': executor must be a name like 'local'" in problems
    configured = load_flows(flows, executors={"dask": GOOD})
    assert not any("heavy" in p for p in configured.problems)


def test_a_task_setting_wins_over_the_flow_setting() -> None:
    flow = Flow("placed", executor="dask")

    @flow.task
    def remote() -> None: ...

    @flow.task(executor="local")
    def here() -> None: ...

    flow.validate(executors=["dask"])
    assert flow.tasks["remote"].remote == "dask"
    assert flow.tasks["here"].remote is None
    assert (
        Flow("bad", executor="no way")
        .problems()[0]
        .endswith("flow 'bad': executor must be a name like 'local' or 'dask', not 'no way'")
    )


@pytest.mark.slow  # a fresh interpreter: what is imported
def test_dask_is_not_imported_unless_a_task_uses_it(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    write(
        flows / "plain.py",
        """
        from runtime import Flow

        flow = Flow("plain")

        @flow.task
        def one() -> int:
            return 1
        """,
    )
    write(tmp_path / "sluiceway.toml", "[executors.dask]\naddress = 'tcp://127.0.0.1:9'\n")
    script = textwrap.dedent(
        """
        import sys
        import anyio
        from runtime.config import load_config
        from runtime.define.loader import load_flows
        from runtime.engine.runner import open_runner

        config = load_config()
        loaded = load_flows(config.flows, config.pools, executors=config.executors)

        async def main():
            async with open_runner(config) as runner:
                result = await runner.run(loaded.flows["plain"])
            assert result.state == "succeeded", result

        anyio.run(main)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "flows"],
        cwd=tmp_path,
        env={"SLUICEWAY_FLOWS": "flows", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
