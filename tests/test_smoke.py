from __future__ import annotations

from runtime import Flow, Run
from runtime.states import RunState, TaskState
from tests.conftest import MakeRunner


async def test_chain_passes_results(make_runner: MakeRunner) -> None:
    flow = Flow("smoke", params={"n": 3})

    @flow.task
    async def extract(run: Run, n: int) -> list[int]:
        return list(range(n))

    @flow.task
    def total(extract: list[int]) -> int:
        return sum(extract)

    async with make_runner() as runner:
        result = await runner.run(flow)
    assert result.state is RunState.SUCCEEDED
    assert result["total"] == 3
    assert result.tasks["total"].state is TaskState.SUCCEEDED
