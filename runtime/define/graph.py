"""DAG checks on a flow's tasks: unknown names, cycles (with their path), topological order."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Graph:
    """The dependency structure of a validated flow.

    :ivar order: task names in a topological order (definition order among equals)
    :ivar upstream: for each task, the tasks it waits for (data dependencies and ``after=``)
    :ivar downstream: for each task, the tasks that wait for it
    """

    order: tuple[str, ...]
    upstream: Mapping[str, tuple[str, ...]]
    downstream: Mapping[str, tuple[str, ...]]

    def levels(self) -> list[list[str]]:
        """The tasks by level: a task's level is one more than its deepest upstream's, so the
        tasks of one level never wait for each other and can run in parallel (``order``
        among the tasks of a level)."""
        depth: dict[str, int] = {}
        levels: list[list[str]] = []
        for name in self.order:
            level = depth[name] = 1 + max((depth[d] for d in self.upstream[name]), default=-1)
            if level == len(levels):
                levels.append([])
            levels[level].append(name)
        return levels

    def describe_order(self) -> str:
        """``extract -> {eu, us} -> combine``: the levels in order, a level of several tasks
        in braces."""
        return " -> ".join(
            level[0] if len(level) == 1 else "{" + ", ".join(level) + "}" for level in self.levels()
        )


def find_cycle(upstream: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle as a path ``[a, b, c, a]`` (a before b before c), or ``None``.

    Only names that are keys of *upstream* are followed, so unknown names are not cycles.
    """
    # iterative DFS with colours; edges point from a task to what must run before it, and
    # the path is reversed at the end so it reads in execution order. Each task keeps an
    # iterator over its upstream on the stack, so every edge is looked at once: a task after
    # 10,000 others costs 10,000 steps (re-listing its upstream at each return cost 10^8).
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(upstream, white)
    for root in upstream:
        if colour[root] != white:
            continue
        stack: list[tuple[str, Iterator[str]]] = [(root, iter(upstream[root]))]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            node, deps = stack[-1]
            for nxt in deps:
                seen = colour.get(nxt)
                if seen == grey:
                    cycle = [*path[path.index(nxt) :], nxt]
                    cycle.reverse()
                    return cycle
                if seen == white:  # None: an unknown name, not followed
                    colour[nxt] = grey
                    stack.append((nxt, iter(upstream[nxt])))
                    path.append(nxt)
                    break
            else:
                colour[node] = black
                stack.pop()
                path.pop()
    return None


def topological_order(upstream: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's algorithm, stable: among ready tasks the one defined first comes first.

    :raises ValueError: when the graph has a cycle
    """
    position = {name: i for i, name in enumerate(upstream)}
    indegree = {name: len(set(deps)) for name, deps in upstream.items()}
    downstream: dict[str, list[str]] = {name: [] for name in upstream}
    for name, deps in upstream.items():
        for dep in set(deps):
            downstream[dep].append(name)
    import heapq

    ready = [(position[n], n) for n, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for nxt in downstream[name]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                heapq.heappush(ready, (position[nxt], nxt))
    if len(order) != len(upstream):
        raise ValueError("graph has a cycle")
    return order


def build_graph(upstream: Mapping[str, Sequence[str]]) -> Graph:
    """Freeze a checked, acyclic dependency map into a :class:`Graph`."""
    order = topological_order(upstream)
    down: dict[str, list[str]] = {name: [] for name in order}
    for name in order:
        for dep in upstream[name]:
            down[dep].append(name)
    return Graph(
        order=tuple(order),
        upstream={name: tuple(upstream[name]) for name in order},
        downstream={name: tuple(down[name]) for name in order},
    )
