"""`dask scheduler` and `dask worker` as separate processes, the way a user deploys them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.waiting import WAIT, wait_until

DASK = [str(Path(sys.executable).parent / "dask")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DaskProcesses:
    """A scheduler on a fixed port and its workers; each one's output in a file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.scheduler: subprocess.Popen[bytes] | None = None

    def _start(self, name: str, *args: str, allowed_failures: int = 0) -> subprocess.Popen[bytes]:
        log = self.folder / f"{name}-{len(self.procs)}.log"
        env = {
            **os.environ,
            # a worker's death fails its task: Sluiceway's retry policy decides, not Dask
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(allowed_failures),
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*DASK, *args], stdout=out, stderr=out, stdin=subprocess.DEVNULL, env=env
            )
        self.procs.append(proc)
        return proc

    def start_scheduler(self, allowed_failures: int = 0) -> None:
        self.scheduler = self._start(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--no-dashboard", allowed_failures=allowed_failures,
        )  # fmt: skip
        wait_until(self._listening, f"the scheduler on {self.address}", details=self.logs)

    def start_worker(self, nthreads: int = 2) -> None:
        self._start(
            "worker", "worker", self.address, "--nthreads", str(nthreads), "--no-dashboard",
            "--host", "127.0.0.1",
        )  # fmt: skip

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.kill()
        self.scheduler.wait(timeout=WAIT)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.folder.glob("*.log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:  # pragma: no cover - a stuck zombie
                pass


@contextmanager
def dask_processes(folder: Path) -> Iterator[DaskProcesses]:
    folder.mkdir(parents=True, exist_ok=True)
    procs = DaskProcesses(folder)
    try:
        yield procs
    finally:
        procs.stop()
