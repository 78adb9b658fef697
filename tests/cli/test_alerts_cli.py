"""sluiceway test-alert, alerts [--failed] [--json], alerts resend ID."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime import redact
from tests.alerts.endpoint import Endpoint, Reply, running_endpoint
from tests.cli_helpers import sluiceway

CANARY = "canary-cli-5ecret-1a2b"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with running_endpoint() as server:
        yield server
    redact.forget_all()


def setup(tmp_path: Path, url: str) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "sluiceway.toml").write_text(
        f'db = "h.db"\nflows = "flows"\n[notifiers.webhook.ops]\nurl = "{url}"\n'
    )


@pytest.mark.slow
def test_test_alert_prints_the_answer_or_fails_redacted(tmp_path: Path, endpoint: Endpoint) -> None:
    setup(tmp_path, endpoint.url(f"/hooks/{CANARY}"))
    done = sluiceway("test-alert", "webhook:ops", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("webhook:ops: 200")
    (got,) = endpoint.received
    assert got.json()["kind"] == "test"
    endpoint.answer(Reply(500))
    failed = sluiceway("test-alert", "webhook:ops", cwd=tmp_path)
    assert failed.returncode == 1
    assert "500" in failed.stderr
    assert CANARY not in failed.stderr + failed.stdout
    unknown = sluiceway("test-alert", "slack:nope", cwd=tmp_path)
    assert unknown.returncode == 2
    assert "unknown destination 'slack:nope' (configured: webhook:ops)" in unknown.stderr


@pytest.mark.slow
def test_alerts_lists_and_resend_only_takes_a_dead_letter(tmp_path: Path) -> None:
    import sqlite3

    setup(tmp_path, "http://127.0.0.1:9/x")
    (tmp_path / "flows" / "ok.py").write_text(
        "from runtime import Flow\nok = Flow('ok')\n\n\n@ok.task\ndef one() -> None:\n    pass\n"
    )
    made = sluiceway("run", "ok", cwd=tmp_path)  # creates the database
    assert made.returncode == 0, made.stderr
    conn = sqlite3.connect(tmp_path / "h.db")
    conn.execute(
        "INSERT INTO outbox (created_at, event, kind, flow, run_id, destination, state, "
        "attempts, next_at, payload, last_error) VALUES ('2026-01-02T00:00:00Z', 'run.failed', "
        "'alert', 'orders', 1, 'webhook:ops', 'dead', 8, 0, '{}', '503 Service Unavailable')"
    )
    conn.commit()
    conn.close()
    listed = sluiceway("alerts", "--failed", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert row["state"] == "dead"
    assert row["last_error"] == "503 Service Unavailable"
    assert "503" in sluiceway("alerts", cwd=tmp_path).stdout
    assert sluiceway("alerts", "resend", "1", cwd=tmp_path).returncode == 0
    (again,) = json.loads(sluiceway("alerts", "--json", cwd=tmp_path).stdout)
    assert again["state"] == "pending"
    second = sluiceway("alerts", "resend", "1", cwd=tmp_path)
    assert second.returncode == 2
    assert "is pending, not dead" in second.stderr
    missing = sluiceway("alerts", "resend", "7", cwd=tmp_path)
    assert "no alert delivery 7" in missing.stderr
