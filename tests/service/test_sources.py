"""The service's trigger sources: made per plugin name the flows use, given their bindings,
supervised (a source that raises is started again; one that cannot start does not hold the
service), re-bound after a reload."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from runtime import Flow, registry, source
from runtime.abc import Binding, TriggerSource
from runtime.config import Config
from runtime.service import sources as sources_module
from runtime.service.context import ServiceContext
from runtime.service.sources import Sources, bindings
from runtime.testing import open_test_runner
from tests.waiting import WAIT

HERE = Path(__file__).resolve().parent


class Recorder(TriggerSource):
    """Remembers its bindings; its runs are scripted by the test through ``script``."""

    plugin = "recorder"
    made: ClassVar[list[Recorder]] = []
    script: ClassVar[list[str]] = []  # per run(): "raise" before started, "crash" after

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.bound: list[list[Binding]] = []
        self.runs = 0
        self.changed = anyio.Event()
        Recorder.made.append(self)

    def bind(self, bindings: Sequence[Binding]) -> None:
        self.bound.append(list(bindings))
        self.changed.set()
        self.changed = anyio.Event()

    async def run(self, *, task_status: Any) -> None:
        self.runs += 1
        step = Recorder.script.pop(0) if Recorder.script else "serve"
        self.changed.set()
        self.changed = anyio.Event()
        if step == "raise":
            raise RuntimeError("cannot reach the bucket")
        task_status.started()
        if step == "crash":
            raise RuntimeError("lost the connection")
        await anyio.sleep_forever()


@pytest.fixture(autouse=True)
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sources_module, "RESTART_FIRST", 0.01)
    Recorder.made, Recorder.script = [], []
    registry.register(Recorder)
    yield
    registry.unregister("recorder")


def flow_with(name: str, *triggers: Any) -> Flow:
    flow = Flow(name, triggers=list(triggers))

    @flow.task
    def t() -> None:
        pass

    return flow


async def wait_for(check: Any) -> None:
    """Wait until *check()*, woken by every bind and run of the (first) source."""
    with anyio.fail_after(WAIT):
        while True:
            changed = Recorder.made[0].changed
            if check():
                return
            await changed.wait()


def test_bindings_carry_the_flow_the_key_the_options_and_the_file_folder() -> None:
    spec = source("recorder", bucket="b")
    flows = {"a": flow_with("a", spec), "b": flow_with("b")}
    (binding,) = bindings(flows)["recorder"]
    assert binding == Binding("a", str(spec), {"bucket": "b"}, HERE, spec.where)
    assert binding.where.startswith("tests/service/test_sources.py:")


async def test_a_source_is_bound_started_and_rebound_after_a_reload(tmp_path: Path) -> None:
    async with open_test_runner(tmp_path / "s.db") as runner:
        ctx = ServiceContext(Config(), runner, {"a": flow_with("a", source("recorder"))}, 1)
        parts = Sources(ctx)
        async with anyio.create_task_group() as tg:
            await tg.start(parts.run)
            (made,) = Recorder.made
            assert made.runs == 1
            assert [b.flow for b in made.bound[-1]] == ["a"]
            ctx.replace_flows(
                {
                    "a": flow_with("a"),
                    "b": flow_with("b", source("recorder", x=1), source("recorder", x=2)),
                }
            )
            await wait_for(lambda: len(made.bound) == 2)
            assert [(b.flow, b.options) for b in made.bound[-1]] == [
                ("b", {"x": 1}),
                ("b", {"x": 2}),
            ]
            ctx.replace_flows({"a": flow_with("a")})
            await wait_for(lambda: len(made.bound) == 3)
            assert made.bound[-1] == []  # bound to nothing: still the one instance
            assert len(Recorder.made) == 1
            tg.cancel_scope.cancel()


async def test_a_source_that_raises_is_started_again_and_others_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    Recorder.script = ["raise", "crash", "serve"]
    async with open_test_runner(tmp_path / "s.db") as runner:
        ctx = ServiceContext(Config(), runner, {"a": flow_with("a", source("recorder"))}, 1)
        parts = Sources(ctx)
        async with anyio.create_task_group() as tg:
            await tg.start(parts.run)  # not held up by a source that cannot start
            (made,) = Recorder.made
            await wait_for(lambda: made.runs == 3)
            tg.cancel_scope.cancel()
    failures = [r.getMessage() for r in caplog.records if "trigger source" in r.getMessage()]
    assert failures == [
        "trigger source 'recorder' failed; starting it again in 0.01s",
        "trigger source 'recorder' failed; starting it again in 0.02s",
    ]
    assert "cannot reach the bucket" in caplog.text


async def test_an_unknown_plugin_is_reported_once_and_the_rest_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    flows = {"a": flow_with("a", source("recorder")), "b": flow_with("b", source("s3"))}
    async with open_test_runner(tmp_path / "s.db") as runner:
        ctx = ServiceContext(Config(), runner, flows, 1)
        parts = Sources(ctx)
        async with anyio.create_task_group() as tg:
            await tg.start(parts.run)
            ctx.replace_flows(dict(flows))
            await wait_for(lambda: len(Recorder.made[0].bound) == 2)
            tg.cancel_scope.cancel()
    said = [r.getMessage() for r in caplog.records if "'s3' cannot start" in r.getMessage()]
    assert len(said) == 1
    assert "unknown plugin 's3'" in said[0]
    assert list(parts.running) == ["recorder"]
