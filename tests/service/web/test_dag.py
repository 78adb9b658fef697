"""The DAG layout as a unit: longest-path layers, boxes that never overlap, edges that
always point forward (left to right), long edges routed beside the layers they skip, and
fewer crossings after the barycenter sweeps."""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence

import pytest

from runtime.define.graph import topological_order
from runtime.service.web.dag import (
    GAP_X,
    NODE_W,
    DagLayout,
    _Graph,
    count_crossings,
    layout_dag,
    longest_path_layers,
)

ETL = {
    "extract": (),
    "clean": ("extract",),
    "transform": ("clean",),
    "load": ("transform",),
    "notify": ("load", "extract"),
}


def check_geometry(layout: DagLayout, upstream: Mapping[str, Sequence[str]]) -> None:
    boxes = list(layout.nodes.values())
    for a, b in itertools.combinations(boxes, 2):
        apart = a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y
        assert apart, (a, b)
    for box in boxes:
        assert 0 <= box.x
        assert box.x + box.w <= layout.width
        assert 0 <= box.y
        assert box.y + box.h <= layout.height
    assert len(layout.edges) == sum(len(set(v)) for v in upstream.values())
    for edge in layout.edges:
        xs = [x for x, _ in edge.points]
        assert xs == sorted(xs), edge  # forward only
        source, target = layout.nodes[edge.source], layout.nodes[edge.target]
        assert edge.points[0] == (source.x + source.w, source.y + source.h / 2)
        assert edge.points[-1] == (target.x, target.y + target.h / 2)
        assert edge.path.startswith("M")


def test_layers_are_longest_paths() -> None:
    layers = longest_path_layers(list(ETL), ETL)
    assert layers == {"extract": 0, "clean": 1, "transform": 2, "load": 3, "notify": 4}


def test_etl_layout_is_a_line_with_the_long_edge_beside_it() -> None:
    layout = layout_dag(list(ETL), ETL)
    check_geometry(layout, ETL)
    assert [layout.nodes[n].x for n in ETL] == [12 + i * (NODE_W + GAP_X) for i in range(5)]
    long = next(e for e in layout.edges if (e.source, e.target) == ("extract", "notify"))
    # routed through the three layers it skips: two points in each, none inside a box
    assert len(long.points) == 2 + 2 * 3
    for x, y in long.points[1:-1]:
        for box in layout.nodes.values():
            inside = box.x < x < box.x + box.w and box.y < y < box.y + box.h
            assert not inside, (x, y, box)


def test_a_single_task_and_no_tasks() -> None:
    one = layout_dag(["only"], {"only": ()})
    assert one.nodes["only"].layer == 0
    assert one.edges == []
    none = layout_dag([], {})
    assert none.nodes == {}
    assert none.width >= 0


def test_barycenter_sweeps_remove_avoidable_crossings() -> None:
    # a1 feeds b2 and a2 feeds b1: in definition order the two edges cross
    upstream = {"a1": (), "a2": (), "b1": ("a2",), "b2": ("a1",)}
    graph = _Graph(list(upstream), upstream)
    assert count_crossings(graph, graph.initial_layers()) == 1
    layout = layout_dag(list(upstream), upstream)
    assert layout.crossings == 0
    check_geometry(layout, upstream)
    a1, b2 = layout.nodes["a1"], layout.nodes["b2"]
    assert a1.rank == b2.rank  # each edge runs straight across


@pytest.mark.parametrize("seed", range(5))
def test_random_dags_keep_the_geometry(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"t{i}" for i in range(30)]
    upstream = {
        name: tuple(rng.sample(names[:i], k=min(i, rng.randint(0, 3))))
        for i, name in enumerate(names)
    }
    order = topological_order(upstream)
    layout = layout_dag(order, upstream)
    check_geometry(layout, upstream)
    layers = longest_path_layers(order, upstream)
    for name, deps in upstream.items():
        for dep in deps:
            assert layers[dep] < layers[name]
            assert layout.nodes[dep].x < layout.nodes[name].x
    graph = _Graph(order, upstream)
    assert layout.crossings <= count_crossings(graph, graph.initial_layers())
