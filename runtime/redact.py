"""Secrets stay secret: values registered here are replaced by ``***`` wherever Sluiceway
writes text a person or a file can see (log lines, stored errors, CLI output, API answers).

The config registers what it knows to be secret (the API token, notifier URLs, routing keys,
HMAC secrets, passwords) as it reads them; :func:`redact` hides them in any text, and
:class:`RedactingFilter` on the ``sluiceway`` logger hides them in every record, tracebacks
included. A URL is registered whole and also by its path and query, so a message that
shows only part of it (``POST /services/T000/B000/XXXX``) hides that part too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from urllib.parse import urlsplit

__all__ = ["MASK", "RedactingFilter", "forget_all", "redact", "register", "secrets"]

MASK = "***"
MIN_LENGTH = 6  # shorter "secrets" would mask ordinary words; they are not registered

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a URL is masked before its parts


def _parts(value: str) -> list[str]:
    """*value*, and for a URL its path+query and query: the parts that identify it."""
    parts = [value]
    try:
        url = urlsplit(value)
    except ValueError:
        return parts
    if url.scheme and url.netloc:
        tail = url.path + (f"?{url.query}" if url.query else "")
        if len(url.path.strip("/")) >= MIN_LENGTH:
            parts.append(tail)
        if url.query and len(url.query) >= MIN_LENGTH:
            parts.append(url.query)
        if url.password:
            parts.append(url.password)
    return parts


def register(values: Iterable[str | None]) -> None:
    """Treat every value of *values* as secret from now on (``None`` and short ones are
    skipped)."""
    global _secrets
    found = {
        part
        for value in values
        if isinstance(value, str) and len(value) >= MIN_LENGTH
        for part in _parts(value)
        if len(part) >= MIN_LENGTH
    }
    if not found:
        return
    with _lock:
        _secrets = tuple(sorted({*_secrets, *found}, key=len, reverse=True))


def secrets() -> tuple[str, ...]:
    """What is registered (tests)."""
    return _secrets


def forget_all() -> None:
    """Forget every registered secret (tests)."""
    global _secrets
    with _lock:
        _secrets = ()


def redact(text: str) -> str:
    """*text* with every registered secret replaced by :data:`MASK`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Masks registered secrets in a record's message, arguments and traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _secrets:
            return True
        message = record.getMessage()
        masked = redact(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if masked != message:
            record.msg, record.args = masked, None
        return True
