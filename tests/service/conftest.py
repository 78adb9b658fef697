from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.served import Home


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    """A folder for one test's services; any service still running at the end is killed."""
    home = Home(tmp_path)
    try:
        yield home
    finally:
        home.cleanup()
