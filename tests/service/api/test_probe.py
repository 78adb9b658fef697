from __future__ import annotations

from pathlib import Path

from history import History, generate


def test_probe(tmp_path: Path) -> None:
    made: History = generate(tmp_path / "h.db", runs=50)
    assert made.counts["runs"] == 50
