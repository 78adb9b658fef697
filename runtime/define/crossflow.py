"""Checks across the flows of one folder: every ``on_flow`` trigger names a flow (and task)
that exists, and no cycle of ``on_flow`` triggers; pure, on the flows the loader found."""

from __future__ import annotations

import difflib
from collections import deque
from collections.abc import Mapping

from runtime.define.flow import Flow
from runtime.define.sources import FlowTrigger

__all__ = ["cross_flow_problems", "on_flow_cycles"]


def cross_flow_problems(
    flows: Mapping[str, Flow], *, complete: bool = True
) -> dict[str, list[str]]:
    """The problems of each flow that come from the other flows of the folder, by flow name.

    - an ``on_flow`` naming a flow the folder does not define (said only when *complete*:
      while a file fails to import, the flow may be in it, and the broken file is reported
      already); an upstream that exists but is broken does not break its downstream flows;
    - an ``on_flow(task=...)`` naming a task the upstream flow does not have;
    - a cycle of ``on_flow`` triggers (``a -> b -> a``, ``a -> a``): a problem of every flow on
      it, with the path that starts and ends at that flow.

    :param flows: every flow found, broken ones included, by name
    :param complete: every flow file of the folder was imported
    """
    found: dict[str, list[str]] = {}
    for flow in flows.values():
        for spec in flow.upstreams:
            if spec.problems:
                continue  # its own problem is said already
            problem = _reference_problem(flows, spec, complete)
            if problem is not None:
                at = f"{spec.where or flow.where}: flow {flow.name!r}: {spec}"
                found.setdefault(flow.name, []).append(f"{at}: {problem}")
    for name, (path, spec) in on_flow_cycles(flows).items():
        flow = flows[name]
        found.setdefault(name, []).append(
            f"{spec.where or flow.where}: flow {name!r}: on_flow cycle: {' -> '.join(path)}"
        )
    return found


def _reference_problem(flows: Mapping[str, Flow], spec: FlowTrigger, complete: bool) -> str | None:
    upstream = flows.get(spec.flow)
    if upstream is None:
        if not complete:
            return None
        near = difflib.get_close_matches(spec.flow, list(flows), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        known = ", ".join(sorted(flows)) or "none"
        return f"no flow {spec.flow!r} in the flows folder (flows: {known}){hint}"
    if spec.task is not None and spec.task not in upstream.tasks:
        tasks = ", ".join(upstream.tasks) or "none"
        return f"flow {spec.flow!r} has no task {spec.task!r} (its tasks: {tasks})"
    return None


def on_flow_cycles(flows: Mapping[str, Flow]) -> dict[str, tuple[list[str], FlowTrigger]]:
    """Each flow on a cycle of ``on_flow`` triggers: the shortest such cycle through it, as
    flow names in trigger order (``[a, b, a]``: a's runs start b's, b's start a's), and the
    trigger of that flow that closes it (its ``on_flow`` of the flow before it)."""
    # edges point from an upstream to the flows it starts
    starts: dict[str, list[str]] = {name: [] for name in flows}
    closing: dict[tuple[str, str], FlowTrigger] = {}  # (upstream, downstream): the trigger
    for flow in flows.values():
        for spec in flow.upstreams:
            if spec.problems or spec.flow not in flows:
                continue
            if (spec.flow, flow.name) not in closing:
                closing[(spec.flow, flow.name)] = spec
                starts[spec.flow].append(flow.name)
    out: dict[str, tuple[list[str], FlowTrigger]] = {}
    for name in flows:
        path = _shortest_cycle(starts, name)
        if path is not None:
            out[name] = (path, closing[(path[-2], name)])
    return out


def _shortest_cycle(starts: Mapping[str, list[str]], origin: str) -> list[str] | None:
    """The shortest path from *origin* back to it (breadth first), or ``None``."""
    before: dict[str, str] = {}
    queue = deque([origin])
    while queue:
        node = queue.popleft()
        for nxt in starts[node]:
            if nxt == origin:
                back = [node]  # node, the flow before it, ..., origin
                while back[-1] != origin:
                    back.append(before[back[-1]])
                return [*reversed(back), origin]
            if nxt not in before:
                before[nxt] = node
                queue.append(nxt)
    return None
