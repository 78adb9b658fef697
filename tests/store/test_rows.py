"""The store's row types: each NamedTuple's fields are its statement's columns, in order."""

from __future__ import annotations

import re
from typing import NamedTuple

import pytest

from runtime.store import schema
from runtime.store.rows import AttemptRow, RunRow, TaskRow
from tests.store.rows import attempt_row, task_row


def _insert_columns(sql: str) -> tuple[str, ...]:
    match = re.search(r"INSERT INTO \w+ \(([^)]*)\)", sql)
    assert match is not None
    return tuple(column.strip() for column in match[1].split(","))


@pytest.mark.parametrize(
    ("row", "sql"),
    [(TaskRow, schema.UPSERT_TASK), (AttemptRow, schema.UPSERT_ATTEMPT)],
    ids=["task", "attempt"],
)
def test_upsert_rows_bind_in_column_order(row: type[NamedTuple], sql: str) -> None:
    assert row._fields == _insert_columns(sql)


def test_run_row_binds_each_numbered_parameter_to_its_column() -> None:
    bound = {
        int(n): column
        for column, n in re.findall(r"(\w+) = (?:COALESCE\()?\?(\d)", schema.UPDATE_RUN)
    }
    assert {n: RunRow._fields[n - 1] for n in bound} == bound
    assert len(bound) == len(RunRow._fields)


def test_rows_are_keyed_by_name() -> None:
    task = task_row(7, "load", "running", idx=3)
    attempt = attempt_row(7, "load", 2, "failed", idx=3, error="no")
    assert task.key == (7, "load", 3)
    assert attempt.key == (7, "load", 3, 2)
    assert (task.state, attempt.state, attempt.error_message) == ("running", "failed", "no")
    assert RunRow(7, "queued", wait_reason="busy") == (7, "queued", None, None, None, "busy")
