"""Alert routes and notifier tables in the config, flow routes, and the routing built from
them: every bad entry is one message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime import Flow, redact
from runtime.alerting import AlertRoute, parse_route
from runtime.config import load_config
from runtime.errors import ConfigError
from runtime.service.alerts import build_routing

GOOD = """
[[alerts]]
on = ["run.failed", "sla.missed"]
flows = ["orders*"]
to = ["webhook:ops"]
digest = "15m"

[notifiers.webhook.ops]
url = "${OPS_URL}"
secret = "${OPS_SECRET}"
"""
ENV = {"OPS_URL": "http://127.0.0.1:9/hooks/very-secret-path", "OPS_SECRET": "hmac-secret-1"}


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluiceway.toml"
    path.write_text(text)
    return path


def test_routes_and_notifiers_are_read_with_env_values_and_masked(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, GOOD), env=ENV, cwd=tmp_path)
    assert config.alerts == (
        AlertRoute(
            ("run.failed", "sla.missed"),
            ("webhook:ops",),
            ("orders*",),
            900.0,
            f"{tmp_path / 'sluiceway.toml'}: [[alerts]] #1",
        ),
    )
    assert config.notifiers["webhook:ops"]["url"] == ENV["OPS_URL"]
    assert redact.redact(f"POST {ENV['OPS_URL']} with {ENV['OPS_SECRET']}") == "POST *** with ***"
    assert "very-secret" not in repr(config)
    routing = build_routing(config)
    assert [q.destination for q in routing.targets("run.failed", "orders_eu")] == ["webhook:ops"]
    assert routing.targets("run.failed", "billing") == []
    assert routing.targets("run.started", "orders") == []
    # looked up once per (event, flow): the same answer again, from the cache
    assert routing.targets("run.failed", "orders_eu") is routing.targets("run.failed", "orders_eu")
    assert routing.targets("run.failed", "billing") == []
    assert routing.recovering("orders") == ["webhook:ops"]  # a digest route gets recoveries


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD.replace("run.failed", "run.exploded"), "[[alerts]] #1: unknown event 'run.exploded'"),
        (GOOD.replace('to = ["webhook:ops"]', 'to = ["webhook:nope"]'), "unknown destination"),
        (GOOD.replace('digest = "15m"', 'digest = "soon"'), "[[alerts]] #1: digest"),
        (GOOD.replace('to = ["webhook:ops"]', 'to = "webhook"'), "a destination is"),
        (GOOD.replace("flows =", "flowz ="), "[[alerts]] #1: unknown key 'flowz'"),
    ],
    ids=["event", "destination", "digest", "destination-shape", "key"],
)
def test_a_bad_route_is_one_error_naming_the_entry(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(config_file(tmp_path, text), env=ENV, cwd=tmp_path)
    assert expected in str(caught.value)
    assert "sluiceway.toml" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("notifiers.webhook.ops", "notifiers.pigeon.ops").replace(
                "webhook:ops", "pigeon:ops"
            ),
            "[notifiers.pigeon.ops]: unknown plugin 'pigeon'",
        ),
        (GOOD.replace('url = "${OPS_URL}"', 'url = "ftp://x"'), "[notifiers.webhook.ops]: option"),
        (GOOD.replace("${OPS_SECRET}", "${NOT_SET_VAR}"), "ops].secret: ${NOT_SET_VAR} is not"),
    ],
    ids=["plugin", "options", "unset-var"],
)
def test_a_bad_notifier_is_refused_when_the_routing_is_built(
    tmp_path: Path, text: str, expected: str
) -> None:
    config = load_config(config_file(tmp_path, text), env=ENV, cwd=tmp_path)
    with pytest.raises(ConfigError) as caught:
        build_routing(config)
    assert expected in str(caught.value)


def test_flow_routes_are_checked_when_the_flow_is_made() -> None:
    flow = Flow(
        "orders",
        alerts=[
            {"on": ["run.failed"], "to": ["webhook:ops"], "digest": "5m"},
            {"on": ["run.nope"], "to": ["webhook:ops"]},
            {"on": ["run.failed"], "to": ["pigeon:x"]},
            {"on": ["run.failed"], "to": ["webhook:ops"], "flows": ["x"]},
        ],
    )

    @flow.task
    def only() -> None:
        pass

    problems = flow.problems()
    assert len(flow.alerts) == 2
    assert flow.alerts[0].flows == ("orders",)
    assert flow.alerts[0].digest == 300.0
    assert any("alerts[2]: unknown event 'run.nope'" in p for p in problems)
    assert any("alerts: pigeon:x: unknown plugin 'pigeon'" in p for p in problems)
    assert any("alerts[4]: unknown key 'flows'" in p for p in problems)
    assert all("test_routing.py" in p for p in problems)  # file:line of the flow


def test_parse_route_refuses_a_route_without_destinations() -> None:
    with pytest.raises(ValueError, match="to is missing"):
        parse_route({"on": ["run.failed"]}, "x")
