"""The Slack notifier: a Block Kit message to an incoming webhook, with a plain ``text``
fallback for notifications and clients that show no blocks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from plugins.notifiers import facts as f
from plugins.notifiers import options as opt
from plugins.notifiers.http import HttpNotifier

__all__ = ["SlackNotifier", "message"]

# Block Kit limits (api.slack.com/reference/block-kit/blocks): a header's text 150
# characters, a section's 3000, a field's 2000 and at most 10 fields
HEADER_MAX = 150
SECTION_MAX = 3000
FIELD_MAX = 2000
FIELDS_MAX = 10
DIGEST_LINES = 20

ICONS = {
    "error": ":red_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
    "recovery": ":white_check_mark:",
    "test": ":wave:",
}


def escape(text: str) -> str:
    """*text* safe in Slack ``mrkdwn``: ``&``, ``<`` and ``>`` are control characters there."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _icon(alert: Mapping[str, Any]) -> str:
    kind = alert.get("kind")
    return ICONS[kind] if kind in ("recovery", "test") else ICONS[f.severity(alert)]


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, SECTION_MAX)}}


def _body_blocks(alert: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What follows the header: the recovery's words, the facts, the error, a digest's items."""
    blocks: list[dict[str, Any]] = []
    if alert.get("kind") == "recovery":
        resolved = ", ".join(str(e) for e in alert.get("resolves") or []) or "earlier alerts"
        where = f"*{escape(str(alert['flow']))}*" if alert.get("flow") else "It"
        blocks.append(_section(f"{where} is back to normal. This resolves: {escape(resolved)}."))
    pairs = f.lines(alert)[:FIELDS_MAX]
    if pairs:
        fields = [
            {"type": "mrkdwn", "text": _cut(f"*{escape(label)}*\n{escape(value)}", FIELD_MAX)}
            for label, value in pairs
        ]
        blocks.append({"type": "section", "fields": fields})
    error = f.excerpt(alert.get("error"), SECTION_MAX - 100)
    if error:
        blocks.append(_section(f"*Error*\n```{escape(error)}```"))
    grouped = f.items(alert)
    if grouped:
        lines = [f"• {escape(f.item_line(item))}" for item in grouped[:DIGEST_LINES]]
        if len(grouped) > DIGEST_LINES:
            lines.append(f"… and {len(grouped) - DIGEST_LINES} more")
        blocks.append(_section(f"*{len(grouped)} alerts grouped*\n" + "\n".join(lines)))
    return blocks


def message(alert: Mapping[str, Any], *, mention: str | None = None) -> dict[str, Any]:
    """The JSON Slack is sent for *alert*: ``text`` (the fallback) and ``blocks`` (a header,
    the facts, the error excerpt, a digest's items, a button to the run when the alert has a
    ``url``, and a context line with the event, time and alert id)."""
    title = f.title(alert)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(f"{_icon(alert)} {title}", HEADER_MAX)},
        },
        *_body_blocks(alert),
    ]
    if alert.get("url"):
        button = {
            "type": "button",
            "text": {"type": "plain_text", "text": "Open run" if alert.get("run_id") else "Open"},
            "url": str(alert["url"]),
        }
        blocks.append({"type": "actions", "elements": [button]})
    context = [str(p) for p in ("sluiceway", alert.get("event"), alert.get("ts")) if p]
    if alert.get("id") is not None:
        context.append(f"alert {alert['id']}")
    blocks.append(
        {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(" · ".join(context))}]}
    )
    text = escape(title)
    loud = alert.get("kind") in ("alert", "digest") and f.severity(alert) != "info"
    if mention and loud:
        text = f"{mention} {text}"
    return {"text": text, "blocks": blocks}


class SlackNotifier(HttpNotifier):
    """Posts a Block Kit message to a Slack incoming webhook (``url``, which is secret: it is
    the webhook's only credential). Slack answers ``200 ok``; a deleted or disabled webhook
    answers 404 ``no_service`` or 410, which are permanent failures; 429 carries
    ``Retry-After``.

    Options: ``url``, ``mention`` (put before the text of failure and warning alerts, e.g.
    ``"<!here>"`` or ``"<@U024BE7LH>"``), and those of
    :class:`~plugins.notifiers.http.HttpNotifier`.
    """

    plugin = "slack"
    KNOWN: ClassVar[frozenset[str]] = HttpNotifier.KNOWN | {"mention"}
    URL_EXAMPLE = ", e.g. https://hooks.slack.com/services/T000/B000/XXXX"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Those of every HTTP notifier and ``mention``."""
        return [*super().check_options(options), *opt.string(options, "mention")]

    async def send(self, alert: Mapping[str, Any]) -> str:
        """Post *alert* as a Block Kit message; returns e.g. ``"200 OK: ok"``.

        :raises DeliveryError: see :func:`plugins.notifiers.http.post`
        """
        body = orjson.dumps(message(alert, mention=self.options.get("mention")))
        return str(await self.post(body, {}))
