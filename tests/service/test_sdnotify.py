"""sd_notify against real unix datagram sockets: a path, an abstract name, and none at all."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.service.sdnotify import notify, watchdog_interval


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)  # a missing datagram fails the test instead of hanging it
        yield sock


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


def test_notify_sends_to_a_socket_path(
    receiver: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "notify"
    receiver.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    assert notify("READY=1") is True
    assert notify("STATUS=loaded 3 flows\nWATCHDOG=1") is True
    assert receiver.recv(4096) == b"READY=1"
    assert receiver.recv(4096) == b"STATUS=loaded 3 flows\nWATCHDOG=1"


def test_notify_sends_to_an_abstract_socket(
    receiver: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"sluiceway-test-{uuid.uuid4().hex}"
    receiver.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    assert notify("STOPPING=1") is True
    assert receiver.recv(4096) == b"STOPPING=1"


def test_notify_without_socket_is_a_no_op(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert notify("READY=1") is False
        assert notify("READY=1", env={"NOTIFY_SOCKET": ""}) is False
    assert caplog.records == []


def test_notify_reads_an_explicit_environment(receiver: socket.socket, tmp_path: Path) -> None:
    path = tmp_path / "notify"
    receiver.bind(str(path))
    assert notify("READY=1", env={"NOTIFY_SOCKET": str(path)}) is True
    assert receiver.recv(4096) == b"READY=1"


@pytest.mark.parametrize(
    ("address", "logged"),
    [
        ("/nonexistent/sluiceway/notify", "sd_notify: sending 'READY=1' to"),
        ("vsock:2:1234", "sd_notify: unsupported NOTIFY_SOCKET 'vsock:2:1234'"),
    ],
    ids=["missing-socket", "unsupported-kind"],
)
def test_notify_failures_are_logged_not_raised(
    address: str, logged: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    with caplog.at_level(logging.WARNING, logger="sluiceway.runtime.sdnotify"):
        assert notify("READY=1") is False
    assert [r.getMessage()[: len(logged)] for r in caplog.records] == [logged]


def test_notify_to_a_stream_socket_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "stream"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wrong:
        wrong.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        with caplog.at_level(logging.WARNING, logger="sluiceway.runtime.sdnotify"):
            assert notify("READY=1") is False
    assert "failed" in caplog.text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000"}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "me"}, None),
    ],
    ids=["unset", "30s", "half-second", "our-pid", "other-pid", "zero", "garbage", "bad-pid"],
)
def test_watchdog_interval(
    env: dict[str, str], expected: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert watchdog_interval() == expected
    assert watchdog_interval(env=env) == expected


def test_bad_watchdog_values_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sluiceway.runtime.sdnotify"):
        assert watchdog_interval(env={"WATCHDOG_USEC": "soon"}) is None
    assert "WATCHDOG_USEC='soon' is not a number" in caplog.text
