"""The plugin registry: entry points of the group ``sluiceway.plugins`` found by name,
loaded when first asked, checked to be plugin classes of the kind asked for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint
from typing import Any

import pytest

from runtime import registry
from runtime.abc import Binding, Notifier, TriggerSource
from runtime.registry import PluginError


class Drops(TriggerSource):
    plugin = "drops"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        return [] if "bucket" in options else ["bucket is required"]

    def bind(self, bindings: Sequence[Binding]) -> None:
        self.bindings = list(bindings)

    async def run(self, *, task_status: Any) -> None:
        task_status.started()


class Pager(Notifier):
    plugin = "pager"

    async def send(self, alert: Mapping[str, Any]) -> str:
        return "sent"


class Nameless(TriggerSource):
    plugin = ""

    def bind(self, bindings: Sequence[Binding]) -> None:
        pass

    async def run(self, *, task_status: Any) -> None:
        pass


@pytest.fixture
def entry_points(monkeypatch: pytest.MonkeyPatch) -> dict[str, EntryPoint]:
    """The group's entry points, replaced by what the test puts in (module
    tests.test_registry), with nothing loaded or registered yet."""
    eps: dict[str, EntryPoint] = {}
    monkeypatch.setattr(registry, "_eps_cache", eps)
    monkeypatch.setattr(registry, "_loaded", {})
    monkeypatch.setattr(registry, "_registered", {})
    return eps


def ep(name: str, target: str) -> EntryPoint:
    return EntryPoint(name=name, value=f"tests.test_registry:{target}", group=registry.GROUP)


def test_the_projects_own_files_plugin_is_an_entry_point() -> None:
    assert "files" in registry._entry_points()
    assert registry._entry_points()["files"].value == "plugins.triggers.files:FilesSource"


def test_finds_a_plugin_by_its_entry_point(entry_points: dict[str, EntryPoint]) -> None:
    entry_points["drops"] = ep("drops", "Drops")
    assert registry.trigger_source("drops") is Drops
    assert registry.find("trigger", "drops") is Drops
    assert registry.names("trigger") == ["drops"]


def test_an_unknown_name_lists_what_is_installed(entry_points: dict[str, EntryPoint]) -> None:
    entry_points["drops"] = ep("drops", "Drops")
    with pytest.raises(PluginError, match=r"unknown plugin 's3' \(installed: drops\)"):
        registry.trigger_source("s3")


def test_a_plugin_of_another_kind_is_refused(entry_points: dict[str, EntryPoint]) -> None:
    entry_points["pager"] = ep("pager", "Pager")
    entry_points["drops"] = ep("drops", "Drops")
    with pytest.raises(PluginError, match="'pager' is a notifier plugin, not a trigger plugin"):
        registry.trigger_source("pager")
    assert registry.notifier("pager") is Pager
    assert registry.names("notifier") == ["pager"]


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("Missing", "does not load: AttributeError"),
        ("ep", "is not a plugin class"),
        ("Nameless", "has no `plugin` name"),
        ("Drops", "calls itself 'drops'; the names must match"),
    ],
)
def test_a_broken_entry_point_says_why(
    entry_points: dict[str, EntryPoint], target: str, message: str
) -> None:
    entry_points["mine"] = ep("mine", target)
    with pytest.raises(PluginError, match=message):
        registry.trigger_source("mine")
    assert registry.names("trigger") == []  # broken ones are left out of the list


def test_register_adds_a_class_from_code(entry_points: dict[str, EntryPoint]) -> None:
    registry.register(Drops)
    assert registry.trigger_source("drops") is Drops
    registry.unregister("drops")
    with pytest.raises(PluginError, match="unknown plugin 'drops'"):
        registry.trigger_source("drops")


def test_register_refuses_what_is_no_plugin(entry_points: dict[str, EntryPoint]) -> None:
    with pytest.raises(PluginError, match="is not a plugin class"):
        registry.register(dict)  # type: ignore[arg-type]


def test_an_entry_point_is_loaded_once(
    entry_points: dict[str, EntryPoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    loads = []
    real = EntryPoint.load

    def counting(self: EntryPoint) -> Any:
        loads.append(self.name)
        return real(self)

    monkeypatch.setattr(EntryPoint, "load", counting)
    entry_points["drops"] = ep("drops", "Drops")
    for _ in range(3):
        registry.trigger_source("drops")
    assert loads == ["drops"]


def test_an_empty_name_is_refused(entry_points: dict[str, EntryPoint]) -> None:
    with pytest.raises(PluginError, match="must be a non-empty string"):
        registry.trigger_source("")


# --- flows name plugins: checked when the flow is loaded ---


def test_a_flow_naming_an_unknown_plugin_has_a_problem_with_file_and_line(
    entry_points: dict[str, EntryPoint],
) -> None:
    from runtime import Flow, source

    spec = source("s3", bucket="b")
    line = spec.where.rsplit(":", 1)[1]
    flow = Flow("landing", triggers=[spec])

    @flow.task
    def t() -> None:
        pass

    (problem,) = flow.problems()
    assert problem.startswith(f"tests/test_registry.py:{line}: flow 'landing': source('s3'")
    assert "unknown plugin 's3' (installed: none)" in problem


def test_a_plugin_checks_its_options_when_the_flow_loads(
    entry_points: dict[str, EntryPoint],
) -> None:
    from runtime import Flow, source

    registry.register(Drops)
    flow = Flow("landing", triggers=[source("drops", region="eu"), source("drops", bucket="x")])

    @flow.task
    def t() -> None:
        pass

    (problem,) = flow.problems()
    assert "flow 'landing': source('drops', region='eu'): bucket is required" in problem
