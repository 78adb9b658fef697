"""The generic webhook notifier: the alert's facts as a JSON POST, signed with HMAC-SHA256
when a ``secret`` is set, carrying the alert id as an idempotency key."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

from plugins.notifiers import options as opt
from plugins.notifiers.facts import facts
from plugins.notifiers.http import HttpNotifier

__all__ = ["SIGNATURE_HEADER", "WebhookNotifier", "sign"]

SIGNATURE_HEADER = "X-Sluiceway-Signature"
RESERVED = ("Content-Type", "Idempotency-Key", SIGNATURE_HEADER, "X-Sluiceway-Event")


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of the exact *body*
    bytes keyed with *secret* (a receiver recomputes it and compares in constant time)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class WebhookNotifier(HttpNotifier):
    """POSTs every alert as JSON to ``url``; any 2xx answer means delivered.

    The body is the alert's facts (``id``, ``kind``, ``event``, ``summary``, ``flow``,
    ``run_id``, ``task``, ``state``, ``error``, ``logical_date``, ``ts``, ``url``, ``details``,
    ``items``, ``resolves``). Headers: ``Idempotency-Key`` (the alert id, the same on every
    retry and after a restart: a receiver drops a repeat), ``X-Sluiceway-Event``, and
    ``X-Sluiceway-Signature: sha256=<hex>`` when ``secret`` is set.

    Options: ``url``, ``secret`` (HMAC key), ``headers`` (a table of extra headers, e.g.
    ``Authorization``), and those of :class:`~plugins.notifiers.http.HttpNotifier`.
    """

    plugin = "webhook"
    KNOWN: ClassVar[frozenset[str]] = HttpNotifier.KNOWN | {"secret", "headers"}
    URL_EXAMPLE = ", e.g. https://ops.example/hooks/sluiceway"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        """Those of every HTTP notifier, ``secret`` and ``headers``."""
        return [
            *super().check_options(options),
            *opt.string(options, "secret", secret=True),
            *opt.headers(options, RESERVED),
        ]

    def body(self, alert: Mapping[str, Any]) -> bytes:
        """The exact bytes POSTed (and signed) for *alert*."""
        return orjson.dumps(facts(alert))

    def headers(self, alert: Mapping[str, Any], body: bytes) -> dict[str, str]:
        """The custom headers, then the idempotency key, the event and the signature."""
        out = {str(k): str(v) for k, v in (self.options.get("headers") or {}).items()}
        if alert.get("id") is not None:
            out["Idempotency-Key"] = str(alert["id"])
        out["X-Sluiceway-Event"] = str(alert.get("event") or alert.get("kind") or "alert")
        if self.options.get("secret"):
            out[SIGNATURE_HEADER] = sign(str(self.options["secret"]), body)
        return out

    async def send(self, alert: Mapping[str, Any]) -> str:
        """POST *alert*'s facts; returns e.g. ``"200 OK"``.

        :raises DeliveryError: see :func:`plugins.notifiers.http.post`
        """
        body = self.body(alert)
        return str(await self.post(body, self.headers(alert, body)))
