"""JSON in and out (orjson): results, params, triggers and --json output."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


class NotSerializable(Exception):
    """The value cannot be stored as JSON."""


def dumps(value: Any) -> bytes:
    """Encode *value*; raise NotSerializable when orjson cannot."""
    try:
        return orjson.dumps(value, option=_OPTS)
    except TypeError as exc:
        raise NotSerializable(str(exc)) from exc


def dumps_str(value: Any) -> str:
    return dumps(value).decode()


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def pretty(value: Any) -> str:
    """Indented JSON for the CLI's --json output."""
    return orjson.dumps(value, option=_OPTS | orjson.OPT_INDENT_2).decode()


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a trailing Z, as stored and printed; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text)
