"""The run page's view model as a unit: DAG node states of mapped tasks, the task table's
cap on instances (failures kept first), and trigger records."""

from __future__ import annotations

from typing import Any

from runtime.service.web.runpage import dag_nodes, trigger_view, visible_tasks


def task(name: str, state: str, index: int | None = None, attempts: int = 1) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "state": state, "attempts": attempts}
    if index is not None:
        item["index"] = index
    return item


def test_dag_nodes_summarise_mapped_tasks() -> None:
    tasks = [
        task("extract", "succeeded"),
        task("load", "running"),
        task("load", "succeeded", 0),
        task("load", "failed", 1, attempts=3),
        task("load", "running", 2),
    ]
    nodes = dag_nodes(["extract", "load", "report"], tasks)
    assert list(nodes) == ["extract", "load", "report"]
    assert nodes["extract"] == {
        "state": "succeeded", "attempts": 1, "mapped": False, "total": 0, "done": 0,
    }  # fmt: skip
    # still running, but an instance failed: the node shows the failure
    assert nodes["load"]["state"] == "failed"
    assert (nodes["load"]["total"], nodes["load"]["done"]) == (3, 2)
    assert nodes["report"]["state"] == "pending"  # not started: no row yet
    ended = dag_nodes(["load"], [task("load", "succeeded"), task("load", "failed", 0)])
    assert ended["load"]["state"] == "succeeded"  # the mapped task's own outcome


def test_the_task_table_keeps_failures_and_counts_the_rest() -> None:
    tasks = [task("extract", "succeeded"), task("load", "failed")]
    tasks += [task("load", "failed" if i in (150, 160) else "succeeded", i) for i in range(200)]
    tasks += [task("report", "upstream_failed")]
    rows, hidden = visible_tasks(tasks, per_task=10)
    labels = [(t["name"], t.get("index")) for t in rows]
    assert labels[:2] == [("extract", None), ("load", None)]
    assert labels[-1] == ("report", None)
    instances = [i for name, i in labels if name == "load" and i is not None]
    assert len(instances) == 10
    assert {150, 160} <= set(instances)  # the failures are never cut
    assert instances == sorted(instances)  # shown in index order
    assert hidden == {"load": 190}
    assert visible_tasks(tasks[:5], per_task=10) == (tasks[:5], {})


def test_trigger_view() -> None:
    assert trigger_view({"kind": "file", "path": "/in/a.csv", "size": 3}) == {
        "kind": "file",
        "fields": {"path": "/in/a.csv", "size": 3},
    }
    assert trigger_view(None) == {"kind": "manual", "fields": {}}
    assert trigger_view({"via": "cli"})["kind"] == "manual"
