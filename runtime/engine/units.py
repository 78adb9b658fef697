"""A run's tasks as the engine tracks them: nodes of the graph, and the units that run."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio

from runtime.define.flow import Task
from runtime.engine.limits import Lane
from runtime.engine.rules import S
from runtime.store.rows import TaskKey, TaskRow


class Unit:
    """What runs: a task (``idx == -1``, ``index`` None) or one instance of a mapped task
    (``idx`` and ``index`` its position in the items; ``label`` shows it as ``load[3]``)."""

    __slots__ = (
        "attempt_start",
        "attempts",
        "ended_at",
        "error",
        "idx",
        "index",
        "key",
        "label",
        "maker",
        "next_at",
        "node",
        "reason",
        "result",
        "scope",
        "started_at",
        "state",
        "where",
    )

    def __init__(self, node: Node, idx: int) -> None:
        self.node = node
        self.idx = idx  # -1 for the task itself, as in the store's rows
        self.index = idx if idx >= 0 else None  # as in events and the run context
        self.label = node.name if idx < 0 else f"{node.name}[{idx}]"
        self.state = S.PENDING
        self.attempts = 0
        self.result: Any = None
        self.attempt_start: datetime | None = None
        self.next_at: datetime | None = None
        self.key: TaskKey = (0, "", idx)
        self.maker: Callable[[], TaskRow] | None = None  # builds its store row (Recorder)
        self.error: str | None = None
        self.reason: str | None = None
        self.started_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.scope: anyio.CancelScope | None = None
        self.where: str | None = None  # where the last attempt ran, when not here (a worker)


class Node:
    """A task within one run: its upstream count, and the lane its ready units wait in (shared
    with the run's other tasks that need the same slot chain)."""

    __slots__ = (
        "chain",
        "downstream",
        "instances",
        "items",
        "lane",
        "name",
        "not_chosen",
        "open",
        "reused",
        "task",
        "unit",
        "upstream",
        "waiting",
    )

    def __init__(self, task: Task, lane: Lane[Unit]) -> None:
        self.task = task
        self.name = task.name
        self.lane = lane
        self.chain = lane.chain
        self.upstream: tuple[Node, ...] = ()
        self.downstream: tuple[Node, ...] = ()
        self.waiting = 0
        self.unit = Unit(self, -1)
        self.instances: list[Unit] | None = None
        self.items: list[Any] = []
        self.open = 0
        self.not_chosen: str | None = None
        self.reused = False
