from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import pytest

from runtime.define.graph import build_graph, find_cycle, topological_order


def assert_is_cycle(path: list[str], upstream: dict[str, list[str]]) -> None:
    """*path* starts and ends on the same task and each step follows an edge forwards."""
    assert path[0] == path[-1]
    for before, after in pairwise(path):
        assert before in upstream[after], f"{before} -> {after} is not an edge"


def test_find_cycle_returns_path_in_execution_order() -> None:
    upstream = {"a": ["c"], "b": ["a"], "c": ["b"]}
    assert find_cycle(upstream) == ["a", "b", "c", "a"]


def test_find_cycle_self_loop() -> None:
    assert find_cycle({"a": [], "b": ["b"]}) == ["b", "b"]


def test_find_cycle_ignores_the_acyclic_part() -> None:
    upstream = {"start": [], "x": ["start", "z"], "y": ["x"], "z": ["y"], "end": ["z"]}
    path = find_cycle(upstream)
    assert path is not None
    assert set(path) == {"x", "y", "z"}
    assert len(path) == 4
    assert_is_cycle(path, upstream)


def test_find_cycle_none_for_a_dag() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}) is None


def test_find_cycle_does_not_follow_unknown_names() -> None:
    assert find_cycle({"a": ["missing"], "b": ["a", "missing"]}) is None


def test_topological_order_keeps_definition_order_among_equals() -> None:
    upstream = {"z": [], "y": [], "x": ["z"], "w": ["y"], "v": ["w", "x"]}
    assert topological_order(upstream) == ["z", "y", "x", "w", "v"]


def test_topological_order_puts_every_task_after_its_upstream() -> None:
    upstream = {"load": ["clean"], "clean": ["extract"], "extract": [], "report": ["load"]}
    order = topological_order(upstream)
    assert order == ["extract", "clean", "load", "report"]


def test_topological_order_counts_a_repeated_dependency_once() -> None:
    assert topological_order({"a": [], "b": ["a", "a"]}) == ["a", "b"]


def test_topological_order_raises_on_a_cycle() -> None:
    with pytest.raises(ValueError, match="graph has a cycle"):
        topological_order({"a": [], "b": ["c"], "c": ["b"]})


def test_build_graph_links_both_ways() -> None:
    graph = build_graph({"extract": [], "clean": ["extract"], "audit": ["extract"]})
    assert graph.order == ("extract", "clean", "audit")
    assert graph.upstream == {"extract": (), "clean": ("extract",), "audit": ("extract",)}
    assert graph.downstream == {"extract": ("clean", "audit"), "clean": (), "audit": ()}


class _Counted(list[str]):
    """An upstream list that counts the names read from it."""

    reads = 0

    def __iter__(self) -> Iterator[str]:
        for name in super().__iter__():
            _Counted.reads += 1
            yield name

    def __getitem__(self, index: Any) -> Any:
        _Counted.reads += 1
        return super().__getitem__(index)


def test_find_cycle_reads_each_edge_once() -> None:
    # a join task after 1,000 others: its upstream was listed again after each of them
    # returned, a million reads (10,000 upstreams took 6.6 s to validate)
    n = 1000
    upstream = {f"t{i}": _Counted() for i in range(n)}
    upstream["join"] = _Counted(f"t{i}" for i in range(n))
    upstream["after"] = _Counted(["join", *(f"t{i}" for i in range(n))])
    edges = sum(len(deps) for deps in upstream.values())
    _Counted.reads = 0
    assert find_cycle(upstream) is None
    assert _Counted.reads <= edges
