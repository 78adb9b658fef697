"""The real service: killed with -9 between a failure and its delivery, restarted: exactly one
delivery; the canary secret in no log line, CLI output or byte of the database."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.alerts.conftest import CANARY
from tests.alerts.endpoint import Endpoint, Reply
from tests.service.served import Home

FLOW = """
from runtime import Flow

orders = Flow("orders")


@orders.task
def load() -> None:
    raise RuntimeError("warehouse refused the connection")
"""

CONFIG = """
alert_timeout = "20s"

[[alerts]]
on = ["run.failed"]
to = ["webhook:ops"]

[notifiers.webhook.ops]
url = "${OPS_URL}"
secret = "${OPS_SECRET}"
"""


@pytest.mark.slow
def test_kill_9_before_delivery_then_exactly_one_delivery_and_no_secret(
    home: Home, endpoint: Endpoint
) -> None:
    (home.flows / "orders.py").write_text(FLOW)
    (home.root / "sluiceway.toml").write_text(CONFIG)
    env = {"OPS_URL": endpoint.url(f"/hooks/{CANARY}"), "OPS_SECRET": f"hmac-{CANARY}"}
    endpoint.answer(Reply(hang=True), Reply(200))
    served = home.serve(**env)
    served.wait_ready()
    run_id = home.trigger("orders")
    endpoint.wait_received(1)  # the first delivery hangs: the service dies before the answer
    served.kill9()
    assert home.query("SELECT event, state, run_id FROM outbox") == [
        ("run.failed", "pending", run_id)
    ]
    again = home.serve(**env)
    (delivered,) = endpoint.wait_answered(1)
    home.wait_rows("SELECT 1 FROM outbox WHERE state = 'delivered'", what="the mark")
    again.send(signal.SIGTERM)
    assert again.wait_exit(30) == 0
    assert len(endpoint.answered()) == 1
    body = delivered.json()
    assert body["event"] == "run.failed"
    assert body["run_id"] == run_id
    assert delivered.headers["X-Sluiceway-Signature"].startswith("sha256=")
    assert len(endpoint.received) == 2  # the hung one and the one answered; no third
    outputs = [served.log(), again.log()]
    for args in (("alerts", "--json"), ("alerts",), ("show", str(run_id)), ("logs", str(run_id))):
        done = home.cli(*args)
        assert done.returncode == 0, done.stderr
        outputs += [done.stdout, done.stderr]
    assert "webhook:ops" in outputs[2]
    assert '"delivered"' in outputs[2]
    for text in outputs:
        assert CANARY not in text
    for file in home.root.glob("history.db*"):
        assert CANARY.encode() not in file.read_bytes(), file


@pytest.mark.slow
def test_a_bad_route_stops_the_service_with_one_message(home: Home, tmp_path: Path) -> None:
    (home.flows / "orders.py").write_text(FLOW)
    (home.root / "sluiceway.toml").write_text(CONFIG.replace("webhook:ops", "pigeon:ops"))
    served = home.serve(OPS_URL="http://127.0.0.1:9/x", OPS_SECRET="s3cret-value")
    assert served.wait_exit(30) == 2
    assert "unknown destination 'pigeon:ops'" in served.log()
    (home.root / "sluiceway.toml").write_text(CONFIG)
    served = home.serve(OPS_URL="http://127.0.0.1:9/x")
    assert served.wait_exit(30) == 2
    assert "${OPS_SECRET} is not set" in served.log()
    assert "[notifiers.webhook.ops]" in served.log()
