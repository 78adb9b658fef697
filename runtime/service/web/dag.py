"""A flow's DAG laid out for an SVG picture, purely: longest-path layers left to right, long
edges routed through placeholder slots in the layers they cross, the tasks of each layer
ordered by a few barycenter sweeps to reduce crossings, and edges as curves from a task's
right side to the next one's left side.

The picture itself is built by the run page's template (autoescaped); this only decides
where things go.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_W = 168  # px: a task's box
NODE_H = 44
GAP_X = 64  # between layers: room for the curves and their arrowheads
GAP_Y = 16  # between the boxes of one layer
DUMMY_H = 6  # the slot an edge takes where it crosses a layer
PAD = 12
SWEEPS = 4  # down-and-up barycenter passes; the best ordering seen is kept


@dataclass(frozen=True, slots=True)
class Node:
    """One task's box: top-left corner, size, and its layer and place in the layer."""

    name: str
    layer: int
    rank: int
    x: float
    y: float
    w: float = NODE_W
    h: float = NODE_H


@dataclass(frozen=True, slots=True)
class Edge:
    """A dependency drawn from *source* to *target*; ``path`` is the SVG path data."""

    source: str
    target: str
    points: tuple[tuple[float, float], ...]
    path: str


@dataclass(frozen=True, slots=True)
class DagLayout:
    nodes: dict[str, Node]
    edges: list[Edge]
    width: float
    height: float
    crossings: int


def longest_path_layers(
    order: Sequence[str], upstream: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """Each task's layer: 0 for a task without upstream, else one more than its deepest
    upstream's. *order* must be topological."""
    layer: dict[str, int] = {}
    for name in order:
        layer[name] = 1 + max((layer[u] for u in upstream.get(name, ()) if u in layer), default=-1)
    return layer


class _Graph:
    """The layered graph with a placeholder vertex wherever an edge skips a layer; vertices
    are ints (tasks first, in *order*), so placeholders never clash with a task's name."""

    def __init__(self, order: Sequence[str], upstream: Mapping[str, Sequence[str]]) -> None:
        self.names = list(order)
        index = {name: i for i, name in enumerate(order)}
        tasks_layer = longest_path_layers(order, upstream)
        self.layer = [tasks_layer[name] for name in order]
        self.succ: list[list[int]] = [[] for _ in order]
        self.pred: list[list[int]] = [[] for _ in order]
        self.chains: list[tuple[str, str, list[int]]] = []
        for name in order:
            for up in dict.fromkeys(upstream.get(name, ())):
                if up in index:
                    self._add_edge(index[up], index[name])

    def _new_vertex(self, layer: int) -> int:
        self.layer.append(layer)
        self.succ.append([])
        self.pred.append([])
        return len(self.layer) - 1

    def _add_edge(self, u: int, v: int) -> None:
        between = range(self.layer[u] + 1, self.layer[v])
        chain = [u, *(self._new_vertex(layer) for layer in between), v]
        for a, b in itertools.pairwise(chain):
            self.succ[a].append(b)
            self.pred[b].append(a)
        self.chains.append((self.names[u], self.names[v], chain))

    def is_task(self, vertex: int) -> bool:
        return vertex < len(self.names)

    def initial_layers(self) -> list[list[int]]:
        layers: list[list[int]] = [[] for _ in range(max(self.layer, default=-1) + 1)]
        for vertex, layer in enumerate(self.layer):
            layers[layer].append(vertex)
        return layers


def _positions(layers: list[list[int]]) -> dict[int, int]:
    return {v: i for layer in layers for i, v in enumerate(layer)}


def count_crossings(graph: _Graph, layers: list[list[int]]) -> int:
    """Edge crossings between adjacent layers of the ordering *layers*."""
    pos = _positions(layers)
    total = 0
    for layer in layers[:-1]:
        pairs = sorted((pos[u], pos[v]) for u in layer for v in graph.succ[u])
        targets = [v for _, v in pairs]
        # pairs sorted by source: a crossing is a later pair with a smaller target
        for i, first in enumerate(targets):
            total += sum(1 for later in targets[i + 1 :] if later < first)
    return total


def _sweep(layers: list[list[int]], neighbours: list[list[int]], down: bool) -> None:
    indices = range(1, len(layers)) if down else range(len(layers) - 2, -1, -1)
    for i in indices:
        ref = _positions([layers[i - 1] if down else layers[i + 1]])
        current = {v: p for p, v in enumerate(layers[i])}

        def key(v: int, ref: dict[int, int] = ref, current: dict[int, int] = current) -> float:
            near = [ref[n] for n in neighbours[v] if n in ref]
            return sum(near) / len(near) if near else float(current[v])

        layers[i].sort(key=key)


def order_layers(graph: _Graph) -> tuple[list[list[int]], int]:
    """The layers' orderings after barycenter sweeps, and their crossings: the best seen."""
    layers = graph.initial_layers()
    best = [list(layer) for layer in layers]
    best_crossings = count_crossings(graph, layers)
    for _ in range(SWEEPS):
        if best_crossings == 0:
            break
        _sweep(layers, graph.pred, down=True)
        _sweep(layers, graph.succ, down=False)
        crossings = count_crossings(graph, layers)
        if crossings < best_crossings:
            best, best_crossings = [list(layer) for layer in layers], crossings
    return best, best_crossings


def _curve(points: Sequence[tuple[float, float]]) -> str:
    (x, y), *rest = points
    parts = [f"M{x:g},{y:g}"]
    for nx, ny in rest:
        if ny == y:
            parts.append(f"L{nx:g},{ny:g}")
        else:
            mid = (x + nx) / 2
            parts.append(f"C{mid:g},{y:g} {mid:g},{ny:g} {nx:g},{ny:g}")
        x, y = nx, ny
    return " ".join(parts)


def layout_dag(order: Sequence[str], upstream: Mapping[str, Sequence[str]]) -> DagLayout:
    """Where each task of the DAG (*order* topological, *upstream* its edges) and each edge
    goes in the picture."""
    graph = _Graph(order, upstream)
    layers, crossings = order_layers(graph)
    heights = [
        sum(NODE_H if graph.is_task(v) else DUMMY_H for v in layer) + GAP_Y * (len(layer) - 1)
        for layer in layers
    ]
    tallest = max(heights, default=0)
    x_of: dict[int, float] = {}
    y_of: dict[int, float] = {}  # a box's top; a placeholder's centre line
    for li, layer in enumerate(layers):
        y = PAD + (tallest - heights[li]) / 2
        for v in layer:
            x_of[v] = PAD + li * (NODE_W + GAP_X)
            size = NODE_H if graph.is_task(v) else DUMMY_H
            y_of[v] = y if graph.is_task(v) else y + size / 2
            y += size + GAP_Y
    nodes = {
        graph.names[v]: Node(graph.names[v], li, rank, x_of[v], y_of[v])
        for li, layer in enumerate(layers)
        for rank, v in enumerate(layer)
        if graph.is_task(v)
    }
    edges = []
    for source, target, chain in graph.chains:
        points = [(x_of[chain[0]] + NODE_W, y_of[chain[0]] + NODE_H / 2)]
        for v in chain[1:-1]:  # cross a skipped layer straight, beside its boxes
            points += [(x_of[v], y_of[v]), (x_of[v] + NODE_W, y_of[v])]
        points.append((x_of[chain[-1]], y_of[chain[-1]] + NODE_H / 2))
        edges.append(Edge(source, target, tuple(points), _curve(points)))
    width = 2 * PAD + len(layers) * NODE_W + max(len(layers) - 1, 0) * GAP_X
    return DagLayout(nodes, edges, width, tallest + 2 * PAD, crossings)
