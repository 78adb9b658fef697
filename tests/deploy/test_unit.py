"""deploy/sluiceway.service: systemd accepts it, and its sandbox rates 2.0 or lower.

Needs ``systemd-analyze`` (Debian: ``apt-get install systemd``); skipped when it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "sluiceway.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not found (Debian: apt-get install systemd)"
)
SHUTDOWN_GRACE = 30.0  # the service's default shutdown_grace, seconds
COMMIT_TIMEOUT = 30.0  # then the store may retry its last batch this long


def directives() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run(
        [ANALYZE, *args], capture_output=True, text=True, errors="replace", timeout=60, check=False
    )


def verify(unit_text: str, tmp_path: Path) -> list[str]:
    """Run ``systemd-analyze verify`` on a copy whose ExecStart is an existing binary (the real
    one lives in /opt/sluiceway, absent here); return what it says about our unit."""
    binary = Path(sys.executable).resolve()
    copy = tmp_path / UNIT.name
    copy.write_text(
        re.sub(r"^ExecStart=\S+", f"ExecStart={binary}", unit_text, count=1, flags=re.MULTILINE)
    )
    result = analyze("verify", str(copy))
    said = [line for line in (result.stdout + result.stderr).splitlines() if "sluiceway" in line]
    if result.returncode != 0:
        said.append(f"exit status {result.returncode}")
    return said


@needs_analyze
@pytest.mark.slow
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    assert verify(UNIT.read_text(), tmp_path) == []


@needs_analyze
@pytest.mark.slow
def test_verify_would_report_a_mistake(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict")
    assert any("Unknown key" in line for line in verify(broken, tmp_path))


@needs_analyze
@pytest.mark.slow
def test_security_exposure_is_at_most_2() -> None:
    result = analyze("security", "--offline=true", str(UNIT))
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_unit_declares_the_service_contract() -> None:
    found = directives()
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "WatchdogSec": ["30"],
        "User": ["sluiceway"],
        "Group": ["sluiceway"],
        "StateDirectory": ["sluiceway"],
        "WorkingDirectory": ["/var/lib/sluiceway"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        # whatever the exit code, while not asked to stop (on-failure misses an exit 0)
        "Restart": ["always"],
        "KillSignal": ["SIGTERM"],
        "CapabilityBoundingSet": [""],
        "UMask": ["0077"],
        "MemoryDenyWriteExecute": ["yes"],
    }
    assert {key: found.get(key) for key in expected} == expected
    assert found["ExecStart"] == [
        "/opt/sluiceway/.venv/bin/sluiceway serve --config /etc/sluiceway/sluiceway.toml"
    ]
    writable = found["ReadWritePaths"][0].split()
    assert "/var/lib/sluiceway" in writable
    assert any(path.lstrip("-") == "/srv/sluiceway/inbox" for path in writable)


def test_stop_timeout_outlasts_the_shutdown_grace() -> None:
    """systemd must not SIGKILL the service while it still drains running tasks, nor while
    its store still retries the last batch (a locked database, a full disk)."""
    assert float(directives()["TimeoutStopSec"][0]) > SHUTDOWN_GRACE + COMMIT_TIMEOUT + 10


MDWE_CHECK = """
import ctypes, mmap, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0):
    sys.exit(77)  # kernel older than 6.3
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("W+X memory was still allowed")
except OSError:
    pass
import aiosqlite, anyio
import orjson, cronsim, runtime.scheduling.planner, runtime.service.sdnotify

async def main():
    async with aiosqlite.connect(":memory:") as db:
        await db.execute("CREATE TABLE t (x)")
    await anyio.to_thread.run_sync(print, "ok")

anyio.run(main)
"""


@pytest.mark.slow
def test_cpython_runs_under_memory_deny_write_execute() -> None:
    """The kernel's PR_SET_MDWE applies the rule MemoryDenyWriteExecute= enforces."""
    result = subprocess.run(
        [sys.executable, "-c", MDWE_CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")
