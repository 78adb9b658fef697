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

STAGGERED = """
import asyncio
import random

from runtime import Flow

orders = Flow("orders")


@orders.task
async def load() -> None:
    await asyncio.sleep(random.uniform(0.0, 2.0))  # failures spread over two seconds
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


SERVICE_CONFIG = """
shutdown_grace = "10s"
alert_timeout = "5s"

[[alerts]]
on = ["service.started", "service.stopping", "trigger.error"]
to = ["webhook:ops"]

[notifiers.webhook.ops]
url = "${OPS_URL}"
"""


def events(endpoint: Endpoint) -> list[str]:
    return [str(r.json()["event"]) for r in endpoint.answered()]


@pytest.mark.slow
def test_service_events_a_bad_reload_and_the_shutdown_alert(home: Home, endpoint: Endpoint) -> None:
    (home.flows / "orders.py").write_text(FLOW)
    (home.flows / "broken.py").write_text("from runtime import Flow\nthis is not python\n")
    config = home.root / "sluiceway.toml"
    config.write_text(SERVICE_CONFIG)
    served = home.serve(OPS_URL=endpoint.url())
    served.wait_ready()
    endpoint.wait_answered(2)
    assert sorted(events(endpoint)) == ["service.started", "trigger.error"]
    broken = next(r.json() for r in endpoint.answered() if r.json()["event"] == "trigger.error")
    assert "broken.py" in broken["summary"]
    # a bad config at SIGHUP: one error naming the entry; the last good routing stays
    config.write_text(SERVICE_CONFIG.replace('"trigger.error"]', '"trigger.oops"]'))
    served.send(signal.SIGHUP)
    served.wait_log("unknown event 'trigger.oops'")
    assert "[[alerts]] #1" in served.log()
    endpoint.wait_answered(3)  # the reload found broken.py broken again: still routed
    assert events(endpoint)[2] == "trigger.error"
    served.send(signal.SIGTERM)
    assert served.wait_exit(30) == 0
    # the stopping alert was delivered during the shutdown, not left for the next start
    assert events(endpoint)[-1] == "service.stopping"
    assert home.query("SELECT state, COUNT(*) FROM outbox GROUP BY state") == [("delivered", 4)]


@pytest.mark.slow
def test_kill_9_mid_stream_leaves_an_alert_for_every_recorded_failure_and_no_other(
    home: Home, endpoint: Endpoint
) -> None:
    (home.flows / "orders.py").write_text(STAGGERED)
    (home.root / "sluiceway.toml").write_text(CONFIG)
    endpoint.answer(Reply(hang=True))
    served = home.serve(OPS_URL=endpoint.url(), OPS_SECRET="hmac-secret-x")
    served.wait_ready()
    home.queue_runs("orders", 60)
    home.wait_rows("SELECT id FROM runs WHERE state = 'failed'", what="a first failed run")
    served.kill9()  # while runs go on failing: the last batch is committed whole or not at all
    failed = {r[0] for r in home.query("SELECT id FROM runs WHERE state = 'failed'")}
    alerted = [r[0] for r in home.query("SELECT run_id FROM outbox WHERE event = 'run.failed'")]
    assert failed
    assert len(failed) < 60  # killed mid-stream
    assert sorted(alerted) == sorted(failed)  # each failure once, no alert without its failure
