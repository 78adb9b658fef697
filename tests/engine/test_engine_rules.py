"""Trigger rules, branching and skipping, end to end through the engine."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from runtime import Branch, Flow, Run, RunIf, Skip
from runtime.engine.events import Event, TaskEnded
from runtime.states import RunState, TaskState
from runtime.store import connect_reader, queries
from tests.conftest import MakeRunner

S = TaskState
RUN = "ran"  # the task under test ran and succeeded


def stored_run(db_path: Path, run_id: int) -> dict[str, Any]:
    with closing(connect_reader(db_path)) as conn:
        return queries.get_run(conn, run_id)


def ending(kind: str) -> Callable[[], Awaitable[str]]:
    async def up() -> str:
        if kind == "f":
            raise RuntimeError("upstream broke")
        if kind == "k":
            raise Skip("nothing to do")
        return "ok"

    return up


def rule_flow(rule: RunIf, upstream: str) -> Flow:
    """Upstreams u0, u1... ending as *upstream* says (s = succeeded, f = failed, k = skipped)
    and a task ``t`` with ``run_if=rule`` after all of them."""
    flow = Flow(f"rule-{rule}-{upstream}")
    names = [flow.task(name=f"u{i}")(ending(kind)).name for i, kind in enumerate(upstream)]

    @flow.task(after=names, run_if=rule)
    async def t() -> str:
        return RUN

    return flow


# rule -> expected state of t for upstreams: s, f, k, sf, sk, fk, ss, ff, kk
UF, SK = S.UPSTREAM_FAILED, S.SKIPPED
COMBOS = ("s", "f", "k", "sf", "sk", "fk", "ss", "ff", "kk")
TABLE: dict[str, tuple[str | TaskState, ...]] = {
    "all_succeeded": (RUN, UF, SK, UF, SK, UF, RUN, UF, SK),
    "all_done": (RUN, RUN, RUN, RUN, RUN, RUN, RUN, RUN, RUN),
    "any_failed": (SK, RUN, SK, RUN, SK, RUN, SK, RUN, SK),
    "all_failed": (SK, RUN, SK, SK, SK, SK, SK, RUN, SK),
    "none_failed": (RUN, SK, RUN, SK, RUN, SK, RUN, SK, RUN),
    "any_succeeded": (RUN, SK, SK, RUN, RUN, SK, RUN, SK, SK),
}
CASES = [
    pytest.param(rule, combo, expected, id=f"{rule}-{combo}")
    for rule, row in TABLE.items()
    for combo, expected in zip(COMBOS, row, strict=True)
]


@pytest.mark.parametrize(("rule", "upstream", "expected"), CASES)
async def test_rule_against_upstream_states(
    make_runner: MakeRunner, rule: RunIf, upstream: str, expected: str | TaskState
) -> None:
    flow = rule_flow(rule, upstream)
    async with make_runner() as runner:
        result = await runner.run(flow)
    task = result.tasks["t"]
    if expected == RUN:
        assert (task.state, task.result) == (S.SUCCEEDED, RUN)
    else:
        assert task.state is expected
        assert task.attempts == 0
        assert task.reason  # says why it did not run
    # the run fails when an upstream failed, whatever the rule made of it
    want = RunState.FAILED if "f" in upstream else RunState.SUCCEEDED
    assert result.state is want


async def test_upstream_failed_counts_as_failed(make_runner: MakeRunner) -> None:
    flow = Flow("uf-counts")

    @flow.task
    async def broken() -> int:
        raise RuntimeError("broke")

    @flow.task
    async def middle(broken: int) -> int:
        return broken

    @flow.task(after=[middle], run_if="any_failed")
    async def on_failure() -> str:
        return "paged"

    @flow.task(after=[middle], run_if="all_failed")
    async def all_failed() -> str:
        return "all"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["middle"].state is S.UPSTREAM_FAILED
    assert result["on_failure"] == "paged"
    assert result["all_failed"] == "all"


async def test_run_with_on_failure_handler_is_still_failed(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("catch")

    @flow.task
    async def load() -> None:
        raise ConnectionError("warehouse down")

    @flow.task(after=[load], run_if="any_failed")
    async def alert() -> str:
        return "alerted"

    @flow.task(after=[load, alert], run_if="all_done")
    async def cleanup() -> str:
        return "cleaned"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["alert"] == "alerted"
    assert result["cleanup"] == "cleaned"
    assert result.state is RunState.FAILED
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    assert stored["state"] == "failed"
    assert stored["error"] == "failed tasks: load"


async def test_run_with_only_skipped_branches_left_is_succeeded(
    make_runner: MakeRunner, db_path: Path
) -> None:
    flow = Flow("skipped-branches")

    @flow.task
    async def extract() -> int:
        return 1

    @flow.task(after=[extract], run_if="any_failed")
    async def on_failure() -> str:
        return "never"

    @flow.task
    async def load(extract: int) -> int:
        return extract

    @flow.task(after=[on_failure])
    async def after_handler() -> str:
        return "never"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["on_failure"].state is S.SKIPPED
    assert result.tasks["on_failure"].reason == "no upstream task failed"
    assert result.tasks["after_handler"].state is S.SKIPPED
    assert result.state is RunState.SUCCEEDED
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    assert stored["state"] == "succeeded"


# --- branching ---


def branching_flow(choice: tuple[str, ...]) -> tuple[Flow, list[str]]:
    flow = Flow(f"branch-{len(choice)}")
    ran: list[str] = []

    @flow.task
    async def choose() -> Branch:
        return Branch(*choice)

    def body(name: str) -> Callable[[], Awaitable[str]]:
        async def run_branch() -> str:
            ran.append(name)
            return name

        return run_branch

    for name in ("full", "incremental", "nothing"):
        flow.task(name=name, after=[choose])(body(name))
    return flow, ran


@pytest.mark.parametrize(
    "choice",
    [("full",), ("full", "incremental"), ()],
    ids=["one", "two", "none"],
)
async def test_branch_runs_only_chosen_tasks(
    make_runner: MakeRunner, db_path: Path, choice: tuple[str, ...]
) -> None:
    flow, ran = branching_flow(choice)
    async with make_runner() as runner:
        result = await runner.run(flow)
    assert sorted(ran) == sorted(choice)
    assert result.state is RunState.SUCCEEDED
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    by_name = {t["name"]: t for t in stored["tasks"]}
    for name in ("full", "incremental", "nothing"):
        if name in choice:
            assert result.tasks[name].state is S.SUCCEEDED
            assert by_name[name]["state"] == "succeeded"
        else:
            assert result.tasks[name].state is S.SKIPPED
            assert result.tasks[name].reason == "not chosen by choose"
            assert by_name[name]["state"] == "skipped"
            assert by_name[name]["reason"] == "not chosen by choose"


async def test_branch_accepts_task_references(make_runner: MakeRunner) -> None:
    flow = Flow("branch-refs")

    @flow.task
    async def choose() -> Branch:
        return Branch(load_delta)  # the task object, not its name

    @flow.task(after=[choose])
    async def load_full() -> str:
        return "full"

    @flow.task(after=[choose])
    async def load_delta() -> str:
        return "delta"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result["load_delta"] == "delta"
    assert result.tasks["load_full"].state is S.SKIPPED


async def test_branch_naming_a_task_that_is_not_downstream_fails(
    make_runner: MakeRunner,
) -> None:
    flow = Flow("branch-bad")

    @flow.task
    async def choose() -> Branch:
        return Branch("report")

    @flow.task(after=[choose])
    async def load() -> str:
        return "load"

    @flow.task(after=[load])
    async def report() -> str:
        return "report"

    async with make_runner() as runner:
        result = await runner.run(flow)
    task = result.tasks["choose"]
    assert task.state is S.FAILED
    assert task.error is not None
    assert "'choose'" in task.error
    assert "'report'" in task.error
    assert "not a direct downstream task" in task.error
    assert result.tasks["load"].state is S.UPSTREAM_FAILED
    assert result.state is RunState.FAILED


async def test_skip_spreads_through_a_diamond(make_runner: MakeRunner) -> None:
    flow = Flow("diamond-skip")

    @flow.task
    async def start() -> int:
        raise Skip("no new files")

    @flow.task
    async def left(start: int) -> int:
        return start

    @flow.task
    async def right(start: int) -> int:
        return start

    @flow.task
    async def join(left: int, right: int) -> int:
        return left + right

    @flow.task(run_if="all_done")
    async def report(join: int) -> str:
        return "reported"

    async with make_runner() as runner:
        result = await runner.run(flow)
    states = {name: t.state for name, t in result.tasks.items()}
    assert states == {
        "start": S.SKIPPED,
        "left": S.SKIPPED,
        "right": S.SKIPPED,
        "join": S.SKIPPED,
        "report": S.SUCCEEDED,
    }
    assert result.tasks["start"].reason == "no new files"
    assert result.state is RunState.SUCCEEDED


@pytest.mark.parametrize(
    ("join_rule", "expected"),
    [("all_succeeded", S.SKIPPED), ("none_failed", S.SUCCEEDED), ("all_done", S.SUCCEEDED)],
)
async def test_join_after_a_branch(
    make_runner: MakeRunner, join_rule: RunIf, expected: TaskState
) -> None:
    flow = Flow(f"branch-join-{join_rule}")

    @flow.task
    async def choose() -> Branch:
        return Branch("left")

    @flow.task(after=[choose])
    async def left() -> str:
        return "L"

    @flow.task(after=[choose])
    async def right() -> str:
        return "R"

    @flow.task(after=[left, right], run_if=join_rule)
    async def join() -> str:
        return "joined"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["right"].state is S.SKIPPED
    assert result.tasks["join"].state is expected
    assert result.state is RunState.SUCCEEDED


async def test_not_chosen_task_with_all_done_is_still_skipped(make_runner: MakeRunner) -> None:
    flow = Flow("branch-all-done")

    @flow.task
    async def choose() -> Branch:
        return Branch()

    @flow.task(after=[choose], run_if="all_done")
    async def report() -> str:
        return "reported"

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.tasks["report"].state is S.SKIPPED
    assert result.tasks["report"].reason == "not chosen by choose"


# --- Skip ---


async def test_skip_ends_the_task_skipped_with_its_reason(
    make_runner: MakeRunner, db_path: Path, events: list[Event]
) -> None:
    flow = Flow("skipping")

    @flow.task(retries=3)
    async def find_files() -> list[str]:
        raise Skip("no new files")

    @flow.task
    async def load(find_files: list[str]) -> int:
        return len(find_files)

    @flow.task(after=[load], run_if="all_done")
    async def report() -> str:
        return "reported"

    async with make_runner() as runner:
        result = await runner.run(flow)
    find = result.tasks["find_files"]
    assert (find.state, find.reason, find.attempts) == (S.SKIPPED, "no new files", 1)
    assert result.tasks["load"].state is S.SKIPPED
    assert result["report"] == "reported"
    assert result.state is RunState.SUCCEEDED
    stored = await anyio.to_thread.run_sync(stored_run, db_path, result.id)
    by_name = {t["name"]: t for t in stored["tasks"]}
    assert (by_name["find_files"]["state"], by_name["find_files"]["reason"]) == (
        "skipped",
        "no new files",
    )
    assert by_name["find_files"]["error"] is None
    ended = [e for e in events if isinstance(e, TaskEnded) and e.task == "find_files"]
    assert [(e.state, e.reason) for e in ended] == [(S.SKIPPED, "no new files")]
    with closing(connect_reader(db_path)) as conn:
        lines = [(line["name"], line["message"]) for line in queries.get_logs(conn, result.id)]
    assert ("find_files", "skipped: no new files") in lines
    assert ("load", "skipped: an upstream task was skipped") in lines


async def test_skip_from_a_def_task(make_runner: MakeRunner) -> None:
    flow = Flow("skipping-def")

    @flow.task
    def check() -> None:
        raise Skip("holiday")

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert (result.tasks["check"].state, result.tasks["check"].reason) == (S.SKIPPED, "holiday")


async def test_a_task_skipped_after_a_failed_attempt_shows_no_error(
    make_runner: MakeRunner,
) -> None:
    flow = Flow("second-thoughts")

    @flow.task(retries=1, retry_delay=0)
    async def check(run: Run) -> None:
        if run.attempt == 1:
            raise ConnectionError("source down")
        raise Skip("nothing new after all")

    async with make_runner() as runner:
        result = await runner.run(flow)
    task = result.tasks["check"]
    assert (task.state, task.attempts, task.reason, task.error) == (
        S.SKIPPED,
        2,
        "nothing new after all",
        None,
    )
