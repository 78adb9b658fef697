"""``show`` and ``show --json`` list a run's data-quality checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli_helpers import main_output

FLOW = """
from runtime import Flow, Run

orders = Flow("orders")

@orders.task
def load(run: Run) -> int:
    run.check("row_count", True, detail="42 rows")
    run.check("late_rows", False, detail="3 rows after midnight", severity="warn")
    return 42

@orders.check(after="load")
def big_enough(n: int) -> tuple[bool, str]:
    return n > 100, f"{n} <= 100"
"""


def test_show_lists_checks_and_show_json_has_them(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (cli_env / "flows").mkdir()
    (cli_env / "flows" / "orders.py").write_text(FLOW)
    code, _, err = main_output(capsys, "run", "orders", "-q")
    assert code == 1, err
    code, text, _ = main_output(capsys, "show", "1")
    assert code == 0
    lines = [line.split() for line in text.splitlines()]
    assert ["CHECK", "TASK", "RESULT", "DETAIL"] in lines
    assert ["row_count", "load", "passed", "42", "rows"] in lines
    assert ["late_rows", "load", "warn", "3", "rows", "after", "midnight"] in lines
    assert ["big_enough", "load", "FAILED", "42", "<=", "100"] in lines
    assert "QualityCheckError: failed check: big_enough (42 <= 100)" in text
    code, raw, _ = main_output(capsys, "show", "1", "--json")
    checks = json.loads(raw)["checks"]
    assert [
        {k: c[k] for k in ("task", "attempt", "name", "passed", "severity")} for c in checks
    ] == [
        {"task": "load", "attempt": 1, "name": "row_count", "passed": True, "severity": "error"},
        {"task": "load", "attempt": 1, "name": "late_rows", "passed": False, "severity": "warn"},
        {"task": "load", "attempt": 1, "name": "big_enough", "passed": False, "severity": "error"},
    ]
    assert checks[2]["detail"] == "42 <= 100"
