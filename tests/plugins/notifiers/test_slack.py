"""The Slack notifier against a real local server standing in for an incoming webhook: the
Block Kit message and its fallback, a digest, a recovery, Slack's failure answers."""

from __future__ import annotations

from typing import Any

import pytest

from plugins.notifiers.slack import SlackNotifier, message
from runtime.abc import DeliveryError
from tests.plugins.notifiers.conftest import Endpoint, Reply, alert


def blocks_of(body: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [block for block in body["blocks"] if block["type"] == kind]


def all_text(body: dict[str, Any]) -> str:
    return repr(body["blocks"])


async def test_an_alert_is_a_block_kit_message_with_a_fallback(endpoint: Endpoint) -> None:
    answer = await SlackNotifier("data-team", {"url": endpoint.url("/services/T0/B0/X")}).send(
        alert()
    )
    assert answer == "200 OK: ok"
    body = endpoint.received[0].json()
    assert body["text"] == "orders run 12 failed: failed tasks: load"
    (header,) = blocks_of(body, "header")
    assert header["text"] == {
        "type": "plain_text",
        "text": ":red_circle: orders run 12 failed: failed tasks: load",
    }
    fields = [f["text"] for f in blocks_of(body, "section")[0]["fields"]]
    assert fields[:4] == ["*Flow*\norders", "*Run*\n12", "*Task*\nload", "*State*\nfailed"]
    assert "*Event*\nrun.failed" in fields
    assert "*Logical date*\n2026-01-02T00:00:00Z" in fields
    error = blocks_of(body, "section")[1]["text"]["text"]
    assert error == "*Error*\n```ConnectionError: warehouse refused the connection```"
    (actions,) = blocks_of(body, "actions")
    assert actions["elements"][0]["url"] == "https://sluiceway.example/runs/12"
    assert actions["elements"][0]["text"]["text"] == "Open run"
    (context,) = blocks_of(body, "context")
    assert "alert sluiceway-17" in context["elements"][0]["text"]


def test_no_button_without_a_link() -> None:
    assert blocks_of(message(alert(url=None)), "actions") == []


def test_mrkdwn_control_characters_are_escaped() -> None:
    body = message(alert(summary="a <b> & c", error="x < y", flow="<!channel>"))
    assert body["text"] == "a &lt;b&gt; &amp; c"
    assert "<!channel>" not in all_text(body)
    assert "&lt;!channel&gt;" in all_text(body)
    assert "x &lt; y" in all_text(body)


def test_block_kit_limits_are_kept() -> None:
    body = message(alert(summary="s" * 500, error="e" * 10_000, details={"x": "d" * 5000}))
    (header,) = blocks_of(body, "header")
    assert len(header["text"]["text"]) <= 150
    for block in blocks_of(body, "section"):
        assert len(block.get("text", {}).get("text", "")) <= 3000
        assert len(block.get("fields", [])) <= 10
        assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))


def test_a_digest_lists_its_items() -> None:
    items = [alert(run_id=n, summary=f"orders run {n} failed", ts=f"t{n}") for n in range(25)]
    body = message(alert(kind="digest", summary="orders failed 25 times", items=items))
    listing = blocks_of(body, "section")[-1]["text"]["text"]
    assert listing.startswith("*25 alerts grouped*\n• t0: orders run 0 failed\n")
    assert listing.count("• ") == 20
    assert listing.endswith("… and 5 more")


def test_a_recovery_is_calm() -> None:
    body = message(
        alert(
            kind="recovery",
            event="run.succeeded",
            summary="orders recovered: run 13 succeeded",
            state="succeeded",
            error=None,
            resolves=["run.failed", "sla.missed"],
        ),
        mention="<!here>",
    )
    header = blocks_of(body, "header")[0]["text"]["text"]
    assert header.startswith(":white_check_mark: ")
    assert ":red_circle:" not in all_text(body)
    assert "is back to normal. This resolves: run.failed, sla.missed." in all_text(body)
    assert body["text"] == "orders recovered: run 13 succeeded"  # no mention


@pytest.mark.parametrize(
    ("fields", "loud"),
    [
        ({}, True),
        ({"event": "task.retrying"}, True),
        ({"event": "run.succeeded"}, False),
        ({"kind": "test", "event": None}, False),
    ],
)
def test_the_mention_goes_with_failures_and_warnings(fields: dict[str, Any], loud: bool) -> None:
    text = message(alert(**fields), mention="<!here>")["text"]
    assert text.startswith("<!here> ") is loud


@pytest.mark.parametrize(
    ("reply", "permanent"),
    [
        (Reply(404, "no_service"), True),
        (Reply(410, "channel_is_archived"), True),
        (Reply(400, "invalid_blocks"), True),
        (Reply(500, "rollup_error"), False),
    ],
)
async def test_slacks_failure_answers(endpoint: Endpoint, reply: Reply, permanent: bool) -> None:
    endpoint.answer(reply)
    with pytest.raises(DeliveryError) as info:
        await SlackNotifier("data-team", {"url": endpoint.url("/services/T0/B0/X")}).send(alert())
    assert info.value.permanent is permanent
    assert str(info.value).startswith(f"127.0.0.1 answered {reply.status} ")
    assert str(info.value).endswith(reply.body)


async def test_slacks_rate_limit_carries_retry_after(endpoint: Endpoint) -> None:
    endpoint.answer(Reply(429, "rate_limited", {"Retry-After": "30"}))
    with pytest.raises(DeliveryError) as info:
        await SlackNotifier("data-team", {"url": endpoint.url()}).send(alert())
    assert (info.value.retry_after, info.value.permanent) == (30.0, False)


def test_options() -> None:
    assert SlackNotifier.check_options({"url": "https://hooks.slack.com/services/T/B/X"}) == []
    assert SlackNotifier.check_options({}) == [
        (
            "option 'url' is required (the endpoint's URL,"
            " e.g. https://hooks.slack.com/services/T000/B000/XXXX)"
        )
    ]
    assert SlackNotifier.check_options({"url": "https://h.example", "mention": 1}) == [
        "option 'mention' must be a string, not 1"
    ]
    assert SlackNotifier.check_options({"url": "https://h.example", "channel": "#x"}) == [
        "unknown option 'channel' (known: ca_file, mention, timeout, url, verify)"
    ]


def test_details_read_as_words() -> None:
    body = message(alert(kind="digest", details={"count": 3, "events": {"run.failed": 2, "x": 1}}))
    fields = [f["text"] for f in blocks_of(body, "section")[0]["fields"]]
    assert "*Count*\n3" in fields
    assert "*Events*\nrun.failed: 2, x: 1" in fields


@pytest.mark.parametrize("url", ["javascript:alert(1)", "https://s.example/" + "x" * 3000])
def test_a_link_slack_would_refuse_is_left_out(url: str) -> None:
    assert blocks_of(message(alert(url=url)), "actions") == []
