"""The read API's tests share one generated history per test module (bench/history.py)."""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds scripts that import each other by name; the history generator is one of them
BENCH = str(Path(__file__).resolve().parents[3] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
