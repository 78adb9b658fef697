"""What a finished run looks like from Python: its state and each task's state and result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.states import RunState, TaskState


@dataclass(slots=True)
class TaskResult:
    """One task's (or mapped instance's) outcome within a run."""

    name: str
    state: TaskState
    attempts: int = 0
    result: Any = None
    error: str | None = None
    reason: str | None = None
    index: int | None = None
    instances: list[TaskResult] | None = None


@dataclass(slots=True)
class RunResult:
    """A run after it ended: ``state``, and per task its state, attempts and result.

    ``result["load"]`` is the result of task ``load`` (a list for a mapped task).
    """

    id: int
    flow: str
    state: RunState
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state is RunState.SUCCEEDED

    @property
    def results(self) -> dict[str, Any]:
        """Results of the tasks that succeeded, by name."""
        return {n: t.result for n, t in self.tasks.items() if t.state is TaskState.SUCCEEDED}

    def __getitem__(self, task: str) -> Any:
        return self.tasks[task].result
