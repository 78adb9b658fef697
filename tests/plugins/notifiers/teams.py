"""The README's third-party notifier, verbatim: a package ``acme_teams`` with this module as
its ``__init__.py`` and, in its ``pyproject.toml``::

    [project.entry-points."sluiceway.plugins"]
    teams = "acme_teams:TeamsNotifier"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from runtime import redact
from runtime.abc import DeliveryError, Notifier


class TeamsNotifier(Notifier):
    """Posts each alert's summary to a Microsoft Teams incoming webhook.

    Config: ``[notifiers.teams.<name>]`` with ``url`` (the webhook, a secret).
    """

    plugin = "teams"

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        super().__init__(name, options)
        redact.register(self.secrets())  # url: masked in every log line and error
        self.host = URL(str(options["url"])).host

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = [f"unknown option {key!r}" for key in options if key != "url"]
        if not str(options.get("url", "")).startswith(("https://", "http://")):
            problems.append("option 'url' is required: the webhook's http(s) URL")
        return problems

    async def send(self, alert: Mapping[str, Any]) -> str:
        body = {"text": alert["summary"]}
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
                session.post(self.options["url"], json=body) as response,
            ):
                status, reason = response.status, response.reason
        except (aiohttp.ClientError, TimeoutError) as exc:
            # never `from exc`, never str(exc): aiohttp's messages can hold the URL
            raise DeliveryError(f"cannot reach {self.host}: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise DeliveryError(
                f"{self.host} answered {status} {reason}",
                status=status,
                permanent=400 <= status < 500 and status not in (408, 429),
            )
        return f"{status} {reason}"
