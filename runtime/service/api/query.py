"""Reading a GET request's query string: integers in a range, repeatable or comma-separated
lists, ISO dates and times, opaque cursors. Every bad value is a 400 naming its parameter,
and so is a parameter the route does not know (a typo is not silently ignored)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection, Iterable
from datetime import UTC, date, datetime, timedelta

from aiohttp import web

from runtime.service.api.errors import HttpError


def check_known(request: web.Request, known: Collection[str]) -> None:
    """:raises HttpError: 400 naming the first query parameter not in *known*"""
    for name in request.query:
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise HttpError(
                400, f"unknown query parameter {name!r} (parameters: {allowed})", field=name
            )


def one(request: web.Request, name: str) -> str | None:
    """The single value of *name*, or None when absent.

    :raises HttpError: 400 when given twice or empty
    """
    values = request.query.getall(name, [])
    if not values:
        return None
    if len(values) > 1:
        raise HttpError(400, f"{name} is given {len(values)} times; give it once", field=name)
    if not values[0].strip():
        raise HttpError(400, f"{name} is empty", field=name)
    return values[0].strip()


def integer(request: web.Request, name: str, *, default: int, low: int, high: int) -> int:
    """:raises HttpError: 400 unless an integer in [*low*, *high*]"""
    text = one(request, name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise HttpError(400, f"{name} must be an integer, not {text!r}", field=name) from None
    if not low <= value <= high:
        raise HttpError(400, f"{name} must be between {low} and {high}, not {value}", field=name)
    return value


def listed(
    request: web.Request, name: str, *, allowed: Iterable[str] | None = None, most: int = 50
) -> tuple[str, ...]:
    """The values of *name*, repeated (``state=a&state=b``) or comma-separated
    (``state=a,b``), in order, once each.

    :raises HttpError: 400 for an empty item, a value not in *allowed*, more than *most*
    """
    out: list[str] = []
    known = None if allowed is None else tuple(allowed)
    for raw in request.query.getall(name, []):
        for item in raw.split(","):
            value = item.strip()
            if not value:
                raise HttpError(400, f"{name} has an empty value in {raw!r}", field=name)
            if known is not None and value not in known:
                raise HttpError(
                    400, f"{name} {value!r} is not one of: {', '.join(known)}", field=name
                )
            if value not in out:
                out.append(value)
    if len(out) > most:
        raise HttpError(400, f"{name}: at most {most} values, not {len(out)}", field=name)
    return tuple(out)


def moment(request: web.Request, name: str) -> datetime | None:
    """An ISO date (``2026-11-01``: midnight UTC) or date and time (``2026-11-01T06:30``,
    with ``Z`` or an offset; without one it is UTC), as an aware datetime.

    :raises HttpError: 400 for anything else
    """
    text = one(request, name)
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        value = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise HttpError(
            400,
            f"{name} must be an ISO date or date and time, like 2026-11-01 or "
            f"2026-11-01T06:30:00Z, not {text!r}",
            field=name,
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def second_bound(value: datetime, *, up: bool = False) -> str:
    """*value* as the stored ISO text compares: UTC, to the second, no zone. A stored
    ``...:05Z`` and ``...:05.250000Z`` both sort after ``...:05`` and before ``...:06``, so
    text comparison is exact at the second (a fraction is cut, or rounded *up*)."""
    utc = value.astimezone(UTC)
    if up and utc.microsecond:
        utc += timedelta(seconds=1)
    return utc.strftime("%Y-%m-%dT%H:%M:%S")


def encode_cursor(run_id: int) -> str:
    """An opaque cursor for the id *run_id* (base64 of its decimal text)."""
    return base64.urlsafe_b64encode(str(run_id).encode()).decode().rstrip("=")


def decode_cursor(request: web.Request, name: str = "cursor") -> int | None:
    """The id a cursor stands for.

    :raises HttpError: 400 for a cursor this API did not give
    """
    text = one(request, name)
    if text is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        value = int(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        value = -1
    if value < 1 or not raw.isdigit():
        raise HttpError(
            400, f"{name} {text!r} is not a cursor this API gave (use next_cursor)", field=name
        )
    return value
