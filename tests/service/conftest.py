from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.test_service import NotifySocket


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 100, f"{path} is too long for a unix socket address"
    sock = NotifySocket(path)
    try:
        yield sock
    finally:
        sock.close()
