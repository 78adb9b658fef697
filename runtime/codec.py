"""JSON in and out (orjson): results, params, triggers and --json output.

Two encodings share the JSON syntax:

- **plain** (:func:`dumps`, :func:`loads`, :func:`pretty`): what orjson makes of a value;
  triggers, events and the CLI's ``--json`` output.
- **faithful** (:func:`encode`, :func:`decode`): stored task results and run params. A value
  made only of JSON types is stored as the same plain JSON as before, so rows written before
  and after read alike. Any other supported value becomes a tagged object,
  ``{"__sluiceway__": "datetime", "value": "2026-01-02T03:04:05+01:00"}``, that
  :func:`decode` turns back into the same type. A value that would not come back the same
  (an arbitrary object, a subclass, a zone without a name) raises :class:`NotSerializable`:
  it is never stored half right.
"""

from __future__ import annotations

import functools
import math
from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from typing import TYPE_CHECKING, Any

import orjson

from runtime.codec_types import decoder_for, encoder_for, int_text, register

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = [
    "LEGACY_BRANCH_KEY",
    "TAG",
    "NotSerializable",
    "TooLarge",
    "Undecodable",
    "decode",
    "decode_result",
    "dumps",
    "dumps_str",
    "encode",
    "encode_str",
    "from_json",
    "iso",
    "loads",
    "parse_iso",
    "pretty",
    "readable",
    "register",
]

_OPTS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY

TAG = "__sluiceway__"
# how `Branch` results were stored before tagged values: {"__sluiceway_branch__": [names]},
# read as the registered kind "branch"
LEGACY_BRANCH_KEY = "__sluiceway_branch__"
_LEGACY_BRANCH_KIND = "branch"
_MARK = '"__sluiceway__"'
_MARK_BYTES = _MARK.encode()
_RESERVED_PREFIX = b'"__sluiceway'  # a plain value mentioning it goes the careful way

# orjson writes and reads these integers exactly; others are tagged
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_LEAVES = frozenset({str, bool, type(None)})


class NotSerializable(Exception):
    """The value cannot be stored so that it reads back as the same value."""


class TooLarge(NotSerializable):
    """The value's stored form is longer than the limit it was encoded under."""


class Undecodable(ValueError):
    """A stored value carries a tag this version does not know, or a malformed one."""


# --- plain JSON ---


def dumps(value: Any) -> bytes:
    """Encode *value* as orjson does; raise NotSerializable when orjson cannot."""
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


# --- faithful JSON: stored results and params ---


def encode(value: Any, *, max_bytes: int | None = None) -> bytes:
    """Encode *value* so that :func:`decode` gives back an equal value of the same types.

    Plain JSON values (str, bool, None, ints within 64 bits, finite floats, lists, dicts with
    str keys) are stored as plain JSON. Tagged: datetime (naive, or aware with a fixed offset
    or a named ``ZoneInfo``), date, time, timedelta, tuple, set, frozenset, dicts with other
    keys, Decimal, bytes, NaN and infinities, larger ints, UUID, Path, and the types
    registered with :func:`register` (``Branch``).

    :raises TooLarge: when the encoding is longer than *max_bytes*
    :raises NotSerializable: for any other value, naming what cannot be stored
    """
    kind = type(value)
    if kind in _LEAVES or (kind is int and _INT_MIN <= value <= _INT_MAX):
        return _check_size(_orjson(value), max_bytes)  # most results: None, a count, a path
    try:
        if _is_plain(value):
            out = _orjson(value)
            if _RESERVED_PREFIX not in out:
                return _check_size(out, max_bytes)
        tagged = _tag(value)
    except NotSerializable:
        raise
    except RecursionError:
        raise NotSerializable(_TOO_DEEP) from None
    except Exception as exc:  # a value's own method failed (a key's __eq__, an isoformat)
        raise NotSerializable(f"{type(exc).__name__}: {exc}") from exc
    return _check_size(_orjson(tagged), max_bytes)


def encode_str(value: Any) -> str:
    return encode(value).decode()


def decode(data: bytes | str) -> Any:
    """The value :func:`encode` stored; plain JSON (also rows stored before tags) reads as
    orjson reads it.

    :raises Undecodable: for a tag this version does not know
    """
    value = orjson.loads(data)
    if _tagged_within(data):
        value = from_json(value)
    return value


def decode_result(data: bytes | str) -> Any:
    """Like :func:`decode`, for a stored task result: a ``Branch`` stored before tags
    (``{"__sluiceway_branch__": [...]}``) is read back as a ``Branch`` too."""
    value = orjson.loads(data)
    if type(value) is dict and len(value) == 1 and LEGACY_BRANCH_KEY in value:
        return _untag({TAG: _LEGACY_BRANCH_KIND, "value": value[LEGACY_BRANCH_KEY]})
    if _tagged_within(data):
        value = from_json(value)
    return value


def _tagged_within(data: bytes | str) -> bool:
    return _MARK_BYTES in data if isinstance(data, bytes) else _MARK in data


def from_json(value: Any) -> Any:
    """Turn the tagged objects within parsed JSON (as :func:`loads` gives it) back into the
    values they stand for.

    :raises Undecodable: for a tag this version does not know
    """
    kind = type(value)
    if kind is dict:
        if TAG in value:
            return _untag(value)
        return {k: from_json(v) for k, v in value.items()}
    if kind is list:
        return [from_json(v) for v in value]
    return value


def readable(value: Any) -> str:
    """Compact JSON for the CLI's text output; a tagged value is shown as Python prints it
    (``nan``, ``(1, 2)``, ``datetime.date(2026, 1, 2)``)."""
    text = dumps_str(value)
    if _MARK not in text:
        return text
    return _readable(value)


def _readable(value: Any) -> str:
    kind = type(value)
    if kind is dict:
        if TAG in value:
            try:
                return repr(_untag(value))
            except Undecodable:
                return dumps_str(value)
        return "{" + ",".join(f"{dumps_str(k)}:{_readable(v)}" for k, v in value.items()) + "}"
    if kind is list:
        return "[" + ",".join(_readable(v) for v in value) + "]"
    return dumps_str(value)


_TOO_DEEP = "the value is nested more than 254 levels deep, or contains itself"


def _orjson(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # a str with lone surrogates (not UTF-8), or nested too deeply
        message = str(exc)
        raise NotSerializable(_TOO_DEEP if "Recursion" in message else message) from exc


def _check_size(out: bytes, max_bytes: int | None) -> bytes:
    if max_bytes is not None and len(out) > max_bytes:
        raise TooLarge(f"{len(out)} bytes stored is more than result_max_bytes ({max_bytes})")
    return out


def _is_plain(value: Any) -> bool:
    """Whether *value* is made only of JSON types, so orjson writes it and reads it back as
    the same value. Iterative: large results of rows cost no recursion."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    leaves = _LEAVES
    seen: set[int] = set()  # a list within itself is checked once (orjson then refuses it)
    while stack:
        item = pop()
        kind = type(item)
        if kind in leaves:
            continue
        if kind is int:
            if _INT_MIN <= item <= _INT_MAX:
                continue
            return False
        if kind is float:
            if item - item == 0.0:  # finite
                continue
            return False
        if kind is list or kind is dict:
            if id(item) in seen:
                continue
            seen.add(id(item))
            if kind is list:
                extend(item)
                continue
            if TAG in item or LEGACY_BRANCH_KEY in item:
                return False
            for key in item:
                if type(key) is not str:
                    return False
            extend(item.values())
            continue
        return False
    return True


def _tagged(kind: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {TAG: kind, "value": value, **extra}


def _tag(value: Any) -> Any:
    """*value* as JSON types, with a tagged object for each value JSON has no type for."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is int:
        return value if _INT_MIN <= value <= _INT_MAX else _tagged("int", int_text(value))
    if kind is float:
        if math.isfinite(value):
            return value
        return _tagged("float", "nan" if math.isnan(value) else "inf" if value > 0 else "-inf")
    if kind is list:
        return [_tag(v) for v in value]
    if kind is dict:
        if TAG in value or LEGACY_BRANCH_KEY in value or any(type(k) is not str for k in value):
            return _tagged("dict", [[_tag(k), _tag(v)] for k, v in value.items()])
        return {k: _tag(v) for k, v in value.items()}
    if kind is tuple:
        return _tagged("tuple", [_tag(v) for v in value])
    if kind is set or kind is frozenset:
        return _tagged(kind.__name__, [_tag(v) for v in value])
    if kind is datetime or kind is time:
        return _tag_clock(value)
    found = encoder_for(kind)
    if found is not None:
        name, to_json = found
        return _tagged(name, _tag(to_json(value)))
    raise NotSerializable(f"{_type_name(kind)} is not a type Sluiceway stores")


def _tag_clock(value: datetime | time) -> dict[str, Any]:
    """A datetime or time: ISO 8601 (with the offset when it has one), plus the zone's name
    for a ``ZoneInfo``, and ``fold`` when set (the second of a repeated wall time)."""
    kind = "datetime" if type(value) is datetime else "time"
    extra: dict[str, Any] = {}
    zone = value.tzinfo
    if zone is None or type(zone) is timezone:
        if zone is not None and zone.tzname(None) != timezone(zone.utcoffset(None)).tzname(None):
            extra["tzname"] = zone.tzname(None)  # timezone(offset, "CET") keeps its name
    elif type(zone) is _zone_type() and zone.key is not None:
        extra["zone"] = zone.key
    else:
        raise NotSerializable(
            f"{kind} with tzinfo {_type_name(type(zone))} is not stored (only naive, "
            "datetime.timezone offsets and zoneinfo.ZoneInfo zones are)"
        )
    if value.fold:
        extra["fold"] = value.fold
    return _tagged(kind, value.isoformat(), **extra)


def _untag(obj: dict[str, Any]) -> Any:
    kind: Any = obj.get(TAG)
    value: Any = obj.get("value")
    try:
        if kind == "dict":
            return {from_json(k): from_json(v) for k, v in value}
        if kind == "tuple":
            return tuple(from_json(v) for v in value)
        if kind == "set":
            return {from_json(v) for v in value}
        if kind == "frozenset":
            return frozenset(from_json(v) for v in value)
        if kind == "datetime" or kind == "time":
            return _untag_clock(kind, obj)
        from_value = decoder_for(kind)
        if from_value is not None:
            return from_value(from_json(value))
    except (TypeError, ValueError, LookupError, ArithmeticError) as exc:
        raise Undecodable(f"malformed stored {kind} value {repr(value)[:80]}: {exc}") from exc
    raise Undecodable(f"unknown stored value tag {kind!r} (written by a newer version?)")


def _untag_clock(kind: str, obj: dict[str, Any]) -> datetime | time:
    parse = datetime.fromisoformat if kind == "datetime" else time.fromisoformat
    value: datetime | time = parse(obj["value"])
    zone: tzinfo | None = value.tzinfo
    if "zone" in obj:
        zone = _zone_type()(obj["zone"])
    elif "tzname" in obj and zone is not None:
        zone = timezone(zone.utcoffset(None) or timedelta(0), obj["tzname"])
    # the wall time as written, in the zone it was written in
    return value.replace(tzinfo=zone, fold=obj.get("fold", 0))


def _type_name(kind: type) -> str:
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


@functools.cache
def _zone_type() -> type[ZoneInfo]:
    from zoneinfo import ZoneInfo  # on first use: `import runtime` stays cold-fast

    return ZoneInfo


# --- timestamps ---


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with a trailing Z, as stored and printed; None stays None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text)
