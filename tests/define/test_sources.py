"""Event trigger specs (``on_flow``, ``on_event``, ``files``, ``source``), how a Flow checks
them (unknown plugins, options a plugin refuses), and the loader's checks across flows
(``on_flow`` cycles, unknown upstream flows and tasks), each problem with its file:line."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from runtime import Flow, files, on_event, on_flow, source
from runtime.abc import Binding, TriggerSource
from runtime.define.crossflow import on_flow_cycles
from runtime.define.loader import load_flows
from runtime.define.sources import EventTrigger, FlowTrigger, SourceTrigger
from runtime.registry import register, unregister

HERE = "tests/define/test_sources.py"


def line() -> int:
    """The caller's line: where a spec made on the same line says it was made."""
    return sys._getframe(1).f_lineno


# --- on_flow ---


def test_on_flow_defaults_to_a_succeeded_run() -> None:
    spec, at = on_flow("orders"), line()
    assert spec == FlowTrigger("orders", ("succeeded",), None)
    assert spec.where == f"{HERE}:{at}"
    assert spec.problems == ()
    assert str(spec) == "on_flow('orders', state='succeeded')"
    assert spec.to_dict() == {
        "kind": "flow",
        "flow": "orders",
        "state": ["succeeded"],
        "task": None,
    }


def test_on_flow_takes_a_list_of_states_once_each_in_order_and_a_task() -> None:
    spec = on_flow("orders", state=["failed", "cancelled", "failed"], task="load")
    assert spec.states == ("failed", "cancelled")
    assert spec.task == "load"
    assert spec.problems == ()
    assert str(spec) == "on_flow('orders', state=['failed', 'cancelled'], task='load')"


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"flow": "my orders"}, "on_flow: flow name must be letters, digits, '_', '.', '-', not"),
        ({"flow": 3}, "on_flow: flow name must be letters, digits, '_', '.', '-', not 3"),
        ({"state": "done"}, "state must be one or more of succeeded, failed, cancelled"),
        ({"state": []}, "(the end states of a run), not []"),
        ({"state": "skipped"}, "not ['skipped']"),
        ({"state": None}, "not [None]"),
        ({"state": 5}, "not [5]"),
        ({"state": ["succeeded", ["failed"]]}, "not [['failed']]"),
        ({"task": "load", "state": "running"}, "succeeded, failed, skipped, upstream_failed"),
        ({"task": "bad name"}, "on_flow: task must be a task name, not 'bad name'"),
        ({"task": ""}, "on_flow: task must be a task name, not ''"),
    ],
    ids=[
        "space-in-flow",
        "flow-not-a-string",
        "unknown-state",
        "no-state",
        "task-state-for-a-run",
        "state-none",
        "state-number",
        "state-unhashable",
        "running-is-not-an-end",
        "bad-task",
        "empty-task",
    ],
)
def test_on_flow_problems_are_data_not_exceptions(kwargs: dict[str, Any], problem: str) -> None:
    kwargs.setdefault("flow", "orders")
    spec = on_flow(**kwargs)
    assert len(spec.problems) == 1, spec.problems
    assert problem in spec.problems[0]


def test_a_task_trigger_accepts_the_end_states_of_a_task() -> None:
    spec = on_flow("orders", state=["skipped", "upstream_failed"], task="load")
    assert spec.problems == ()


# --- on_event, files, source ---


def test_on_event_names_an_event() -> None:
    spec, at = on_event("orders.landed"), line()
    assert spec == EventTrigger("orders.landed")
    assert (spec.where, spec.problems) == (f"{HERE}:{at}", ())
    assert str(spec) == "on_event('orders.landed')"
    assert spec.to_dict() == {"kind": "event", "name": "orders.landed"}


@pytest.mark.parametrize("name", ["", "a b", "x/y", None, 7])
def test_on_event_refuses_a_name_that_is_no_name(name: Any) -> None:
    [problem] = on_event(name).problems
    assert problem == f"on_event: event name must be letters, digits, '_', '.', '-', not {name!r}"


def test_files_keeps_only_the_options_given_and_shows_durations() -> None:
    spec, at = files("data/inbox", "*.csv", stable_for="5s", on_success="move:done"), line()
    assert spec.plugin == "files"
    assert dict(spec.options) == {
        "folder": "data/inbox",
        "pattern": "*.csv",
        "stable_for": "5s",
        "on_success": "move:done",
    }
    assert spec.where == f"{HERE}:{at}"
    assert (
        str(spec) == "files('data/inbox', on_success='move:done', pattern='*.csv', stable_for='5s')"
    )
    assert files("in", batch=timedelta(seconds=30)).to_dict() == {
        "kind": "files",
        "folder": "in",
        "pattern": "*",
        "batch": "30s",
    }


def test_files_default_options_leave_the_key_unchanged() -> None:
    plain = files("in")
    assert str(files("in", "*", recursive=False, stable_for="2s", ignore=[])) == str(plain)
    assert str(plain) == "files('in', pattern='*')"


def test_files_takes_a_path_as_its_folder_string() -> None:
    assert files(Path("data") / "inbox") == files("data/inbox")
    assert str(files(Path("inbox"))) == "files('inbox', pattern='*')"


def test_source_names_a_plugin_with_its_options() -> None:
    spec, at = source("kafka", topic="orders", group="etl"), line()
    assert spec == SourceTrigger("kafka", {"topic": "orders", "group": "etl"})
    assert spec.where == f"{HERE}:{at}"
    assert str(spec) == "source('kafka', group='etl', topic='orders')"
    assert spec.to_dict() == {"kind": "kafka", "topic": "orders", "group": "etl"}


@pytest.mark.parametrize("plugin", ["", None])
def test_source_without_a_plugin_name_is_a_problem(plugin: Any) -> None:
    assert source(plugin).problems == (f"source() needs a plugin name, not {plugin!r}",)


# --- a Flow checks its triggers ---


class Queue(TriggerSource):
    """A trigger source registered for these tests; ``topic`` is required."""

    plugin: ClassVar[str] = "test-queue"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        return [] if "topic" in options else ["topic is required"]

    def bind(self, bindings: Sequence[Binding]) -> None:
        self.bindings = list(bindings)

    async def run(self, *, task_status: Any) -> None:
        task_status.started()


class Broken(Queue):
    """A plugin whose option check itself fails."""

    plugin: ClassVar[str] = "test-broken"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        raise KeyError("oops")


@pytest.fixture
def plugins() -> Iterator[None]:
    register(Queue)
    register(Broken)
    yield
    unregister(Queue.plugin)
    unregister(Broken.plugin)


def flow_with(*triggers: Any, name: str = "etl") -> Flow:
    flow = Flow(name, triggers=list(triggers))

    @flow.task
    def work() -> None:
        return None

    return flow


def test_a_flow_reports_its_trigger_problems_with_the_trigger_s_line() -> None:
    spec, at = on_flow("orders", state="done"), line()
    [problem] = flow_with(spec).problems()
    assert problem.startswith(f"{HERE}:{at}: flow 'etl': on_flow: state must be")


def test_a_flow_refuses_a_trigger_that_is_no_trigger() -> None:
    flow = flow_with("0 2 * * *")
    [problem] = flow.problems()
    assert flow.where.startswith(f"{HERE}:")
    assert problem == (
        f"{flow.where}: flow 'etl': triggers must be cron(...), every(...), files(...), "
        "on_event(...), on_flow(...) or source(...), not '0 2 * * *'"
    )


def test_an_unknown_plugin_is_a_problem_naming_the_installed_ones() -> None:
    spec, at = source("no-such-plugin", x=1), line()
    [problem] = flow_with(spec).problems()
    assert problem.startswith(
        f"{HERE}:{at}: flow 'etl': source('no-such-plugin', x=1): unknown plugin "
        "'no-such-plugin' (installed: "
    )


@pytest.mark.usefixtures("plugins")
def test_a_plugin_checks_its_options_at_load() -> None:
    good, bad, at = source("test-queue", topic="t"), source("test-queue"), line()
    assert flow_with(good).problems() == []
    assert flow_with(bad).problems() == [
        f"{HERE}:{at}: flow 'etl': source('test-queue'): topic is required"
    ]


@pytest.mark.usefixtures("plugins")
def test_a_plugin_whose_check_fails_is_a_problem_not_a_crash() -> None:
    spec, at = source("test-broken", topic="t"), line()
    assert flow_with(spec).problems() == [
        (
            f"{HERE}:{at}: flow 'etl': source('test-broken', topic='t'): plugin 'test-broken' "
            "failed checking the options: KeyError('oops')"
        )
    ]


def test_the_upstreams_sources_and_events_of_a_flow() -> None:
    up, event = on_flow("orders"), on_event("go")
    flow = flow_with(up, event, source("x"))
    assert flow.upstreams == (up,)
    assert flow.events == (event,)
    assert [s.plugin for s in flow.sources] == ["x"]
    assert flow.time_triggers == ()


# --- the loader: across flows ---

FLOW = """\
from runtime import Flow, on_flow

{name} = Flow({name!r}, triggers=[{triggers}])


@{name}.task
def load():
    return 1
"""


@pytest.fixture
def flows_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "flows"
    folder.mkdir()
    return folder


def write_flow(folder: Path, name: str, *triggers: str) -> str:
    (folder / f"{name}.py").write_text(FLOW.format(name=name, triggers=", ".join(triggers)))
    return f"flows/{name}.py:3"  # where the Flow and its triggers are written


def test_a_cycle_is_a_problem_of_every_flow_on_it_and_they_do_not_load(flows_dir: Path) -> None:
    at_a = write_flow(flows_dir, "a", "on_flow('b')")
    at_b = write_flow(flows_dir, "b", "on_flow('a')")
    write_flow(flows_dir, "c", "on_flow('a')")  # downstream of the cycle, not on it
    loaded = load_flows(flows_dir)
    assert loaded.problems == [
        f"{at_a}: flow 'a': on_flow cycle: a -> b -> a",
        f"{at_b}: flow 'b': on_flow cycle: b -> a -> b",
    ]
    assert sorted(loaded.flows) == ["c"]
    assert loaded.broken == {"a", "b"}


def test_a_flow_that_starts_itself_is_a_cycle(flows_dir: Path) -> None:
    at = write_flow(flows_dir, "a", "on_flow('a', state='failed')")
    loaded = load_flows(flows_dir)
    assert loaded.problems == [f"{at}: flow 'a': on_flow cycle: a -> a"]
    assert loaded.flows == {}


def test_a_cycle_of_three_names_its_path_from_each_flow(flows_dir: Path) -> None:
    write_flow(flows_dir, "a", "on_flow('c')")
    write_flow(flows_dir, "b", "on_flow('a')")
    write_flow(flows_dir, "c", "on_flow('b', task='load')")
    loaded = load_flows(flows_dir)
    assert [p.split(": ", 2)[2] for p in loaded.problems] == [
        "on_flow cycle: a -> b -> c -> a",
        "on_flow cycle: b -> c -> a -> b",
        "on_flow cycle: c -> a -> b -> c",
    ]


def test_a_chain_is_no_cycle(flows_dir: Path) -> None:
    write_flow(flows_dir, "a")
    write_flow(flows_dir, "b", "on_flow('a')")
    write_flow(flows_dir, "c", "on_flow('b')", "on_flow('a', state=['failed'])")
    loaded = load_flows(flows_dir)
    assert loaded.problems == []
    assert sorted(loaded.flows) == ["a", "b", "c"]


def test_an_unknown_upstream_is_a_problem_with_a_suggestion(flows_dir: Path) -> None:
    write_flow(flows_dir, "orders")
    at = write_flow(flows_dir, "report", "on_flow('order')")
    loaded = load_flows(flows_dir)
    assert loaded.problems == [
        (
            f"{at}: flow 'report': on_flow('order', state='succeeded'): no flow 'order' in the "
            "flows folder (flows: orders, report); did you mean 'orders'?"
        )
    ]
    assert sorted(loaded.flows) == ["orders"]


def test_an_unknown_upstream_task_is_a_problem(flows_dir: Path) -> None:
    write_flow(flows_dir, "orders")
    at = write_flow(flows_dir, "report", "on_flow('orders', task='extract')")
    loaded = load_flows(flows_dir)
    assert loaded.problems == [
        (
            f"{at}: flow 'report': on_flow('orders', state='succeeded', task='extract'): flow "
            "'orders' has no task 'extract' (its tasks: load)"
        )
    ]


def test_a_broken_upstream_does_not_break_its_downstream(flows_dir: Path) -> None:
    (flows_dir / "orders.py").write_text(
        "from runtime import Flow\n\norders = Flow('orders', max_active_runs=0)\n\n\n"
        "@orders.task\ndef load():\n    return 1\n"
    )
    write_flow(flows_dir, "report", "on_flow('orders', task='load')")
    loaded = load_flows(flows_dir)
    assert loaded.problems == [
        "flows/orders.py:3: flow 'orders': max_active_runs must be a whole number >= 1, not 0"
    ]
    assert sorted(loaded.flows) == ["report"]


def test_an_upstream_in_a_file_that_does_not_import_is_not_called_unknown(
    flows_dir: Path,
) -> None:
    (flows_dir / "orders.py").write_text("from runtime import Flow\n\norders = Flow('orders'\n")
    write_flow(flows_dir, "report", "on_flow('orders')")
    loaded = load_flows(flows_dir)
    [problem] = loaded.problems
    assert problem.startswith("flows/orders.py:3: cannot import: SyntaxError")
    assert sorted(loaded.flows) == ["report"]


def test_on_flow_cycles_gives_the_closing_trigger_of_each_flow() -> None:
    a_spec, b_spec = on_flow("b"), on_flow("a")
    a, b = flow_with(a_spec, name="a"), flow_with(b_spec, name="b")
    assert on_flow_cycles({"a": a, "b": b}) == {
        "a": (["a", "b", "a"], a_spec),
        "b": (["b", "a", "b"], b_spec),
    }
    assert on_flow_cycles({"a": a}) == {}  # b is not there: no edge, no cycle


def test_the_loader_messages_come_from_the_flow_file(flows_dir: Path) -> None:
    source_text = textwrap.dedent(
        """\
        from runtime import Flow, on_flow

        a = Flow(
            "a",
            triggers=[
                on_flow("b"),
            ],
        )


        @a.task
        def load():
            return 1
        """
    )
    (flows_dir / "a.py").write_text(source_text)
    write_flow(flows_dir, "b", "on_flow('a')")
    loaded = load_flows(flows_dir)
    assert loaded.problems[0] == "flows/a.py:6: flow 'a': on_flow cycle: a -> b -> a"
