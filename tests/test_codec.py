"""runtime.codec's faithful encoding: what a stored result or param reads back as.

Every value of the round-trip table must come back equal *and* of the same types, all the
way down (a tuple stays a tuple, an int key an int, NaN a float NaN, a zone its zone)."""

from __future__ import annotations

import enum
import math
import uuid
from collections import OrderedDict, defaultdict, namedtuple
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from runtime import Branch, codec

AMS = ZoneInfo("Europe/Amsterdam")
NYC = ZoneInfo("America/New_York")
WHEN = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

# the value of issue 9, item 4: what `up` returned, and `down` got back changed on retry
ISSUE = {"when": WHEN, "pair": (1, 2), 1: "x", "nan": math.nan}


def same(a: Any, b: Any) -> bool:
    """Equal, with the same types at every level; NaN equals NaN, a zone must be the same
    zone, fold the same fold (``repr`` tells those apart where ``==`` does not)."""
    if type(a) is not type(b):
        return False
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if type(a) in (set, frozenset):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if type(a) is int:
        return bool(a == b)
    return repr(a) == repr(b)


ROUND_TRIP: list[tuple[str, Any]] = [
    # plain JSON: stored exactly as orjson stores it
    ("none", None),
    ("true", True),
    ("zero", 0),
    ("i64-min", -(2**63)),
    ("u64-max", 2**64 - 1),
    ("float", 1.5),
    ("negative-zero", -0.0),
    ("huge-float", 1e308),
    ("str", "ünïcode ✓"),
    ("str-mentioning-the-tag", "__sluiceway__"),
    ("empty-list", []),
    ("empty-dict", {}),
    ("nested", {"a": {"b": [1, "2", None, {"c": False}]}}),
    # numbers JSON cannot hold
    ("nan", math.nan),
    ("inf", math.inf),
    ("-inf", -math.inf),
    ("above-u64", 2**64),
    ("below-i64", -(2**63) - 1),
    ("big-int", 99999999999999999999999),
    ("int-beyond-str-digits", 10**5000),
    ("decimal", Decimal("1.10")),
    ("decimal-nan", Decimal("NaN")),
    ("decimal-inf", Decimal("-Infinity")),
    ("decimal-exp", Decimal("1E+30")),
    # time
    ("datetime-naive", datetime(2026, 1, 2, 3, 4, 5)),  # noqa: DTZ001
    ("datetime-naive-us", datetime(2026, 1, 2, 3, 4, 5, 7)),  # noqa: DTZ001
    ("datetime-naive-fold", datetime(2026, 10, 25, 2, 30, fold=1)),  # noqa: DTZ001
    ("datetime-utc", WHEN),
    ("datetime-offset", datetime(2026, 1, 2, 3, 4, tzinfo=timezone(timedelta(hours=5.5)))),
    ("datetime-named-offset", datetime(2026, 1, 2, tzinfo=timezone(timedelta(hours=1), "CET"))),
    ("datetime-zone", datetime(2026, 7, 1, 12, tzinfo=AMS)),
    ("datetime-zone-first-of-two", datetime(2026, 10, 25, 2, 30, tzinfo=AMS)),
    ("datetime-zone-second-of-two", datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=AMS)),
    ("datetime-zone-in-gap", datetime(2026, 3, 29, 2, 30, tzinfo=AMS)),
    ("datetime-new-york", datetime(2026, 11, 1, 1, 30, fold=1, tzinfo=NYC)),
    ("date", date(2026, 2, 28)),
    ("time", time(3, 4, 5, 6)),
    ("time-offset", time(3, 4, tzinfo=timezone(timedelta(hours=-3)))),
    ("time-zone", time(3, 4, tzinfo=AMS)),
    ("timedelta", timedelta(days=-1, seconds=5, microseconds=7)),
    ("timedelta-zero", timedelta(0)),
    # containers JSON has no type for
    ("tuple", (1, 2)),
    ("empty-tuple", ()),
    ("nested-tuple", (1, (2, [3, (4,)]))),
    ("set", {1, 2, 3}),
    ("empty-set", set()),
    ("set-of-tuples", {(1, 2), (3, 4)}),
    ("frozenset", frozenset({"a", "b"})),
    ("int-keys", {1: "x", 2: "y"}),
    ("int-and-str-keys", {1: "x", "1": "y"}),
    ("odd-keys", {None: 1, True: 2, 1.5: 3, (1, 2): 4, frozenset({1}): 5, WHEN: 6}),
    ("dict-with-the-tag-key", {"__sluiceway__": "tuple", "value": [1]}),
    ("dict-like-an-old-branch", {"__sluiceway_branch__": ["a"]}),
    # other types
    ("bytes", b"\x00\xff binary"),
    ("empty-bytes", b""),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("path", Path("/srv/data/orders.csv")),
    ("relative-path", Path("data/x")),
    ("branch", Branch("load_full", "notify")),
    # together
    ("issue-9", ISSUE),
    ("rows", [{"id": i, "at": WHEN + timedelta(days=i), "amount": Decimal(i)} for i in range(3)]),
    ("deep", [[[[{"t": (date(2026, 1, 1), {b"k"})}]]]]),
]


def has_a_set(value: Any) -> bool:
    if type(value) in (set, frozenset):
        return True
    if type(value) in (list, tuple):
        return any(has_a_set(v) for v in value)
    if type(value) is dict:
        return any(has_a_set(k) or has_a_set(v) for k, v in value.items())
    return False


@pytest.mark.parametrize(("value"), [v for _, v in ROUND_TRIP], ids=[n for n, _ in ROUND_TRIP])
def test_a_stored_value_reads_back_with_the_same_types(value: Any) -> None:
    stored = codec.encode(value)
    assert same(codec.decode(stored), value)
    assert same(codec.decode(stored.decode()), value)  # TEXT columns (params) too
    assert same(codec.decode_result(stored), value)
    assert same(codec.from_json(codec.loads(stored)), value)
    again = codec.encode(codec.decode(stored))
    assert same(codec.decode(again), value)  # stable
    if not has_a_set(value):
        # a set is stored in its iteration order, which for equal sets can differ with the
        # order of insertion when two members' hashes collide (per run: PYTHONHASHSEED)
        assert again == stored


def test_the_issue_value_comes_back_as_returned() -> None:
    back = codec.decode(codec.encode(ISSUE))
    assert type(back["when"]) is datetime
    assert back["when"] == WHEN
    assert type(back["pair"]) is tuple
    assert back["pair"] == (1, 2)
    assert back[1] == "x"
    assert "1" not in back
    assert math.isnan(back["nan"])


PLAIN = [v for _, v in ROUND_TRIP[:13]]


@pytest.mark.parametrize("value", PLAIN)
def test_plain_json_is_stored_as_before(value: Any) -> None:
    """Plain values keep their old stored form, so `show --json` and old readers see no
    change, and rows written before this encoding read the same."""
    old = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    assert codec.encode(value) == old
    assert same(codec.decode(old), orjson.loads(old))


def test_rows_stored_before_tags_decode_as_before() -> None:
    """Old rows were plain orjson: a datetime was already a string, a tuple a list. They
    read as they did; an old Branch result reads as a Branch."""
    old = orjson.dumps(ISSUE, option=orjson.OPT_NON_STR_KEYS)
    assert codec.decode(old) == {"when": "2026-01-02T03:04:05.123456+00:00", "pair": [1, 2],
                                 "1": "x", "nan": None}  # fmt: skip
    branch = codec.decode_result(b'{"__sluiceway_branch__":["a","b"]}')
    assert type(branch) is Branch
    assert branch.names == ("a", "b")
    # a dict that only looks like one, stored now, stays a dict
    lookalike = {"__sluiceway_branch__": ["a"]}
    assert codec.decode_result(codec.encode(lookalike)) == lookalike


def test_tagged_values_are_readable_json() -> None:
    text = codec.encode({"when": datetime(2026, 7, 1, 12, tzinfo=AMS), "n": math.nan}).decode()
    assert text == (
        '{"when":{"__sluiceway__":"datetime","value":"2026-07-01T12:00:00+02:00",'
        '"zone":"Europe/Amsterdam"},"n":{"__sluiceway__":"float","value":"nan"}}'
    )


def test_readable_shows_plain_json_unchanged_and_tagged_values_as_python() -> None:
    assert codec.readable({"region": "eu", "n": [1, 2]}) == '{"region":"eu","n":[1,2]}'
    view = codec.loads(codec.encode({"x": math.nan, "day": date(2026, 1, 2), "n": 2**70}))
    assert codec.readable(view) == (
        '{"x":nan,"day":datetime.date(2026, 1, 2),"n":1180591620717411303424}'
    )


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 1


class Name(enum.StrEnum):
    A = "a"


class Stamp(datetime):
    """Like pandas.Timestamp: a datetime subclass, with more to it than a datetime."""


class Offset(tzinfo):
    def utcoffset(self, dt: datetime | None) -> timedelta:
        return timedelta(hours=1)

    def dst(self, dt: datetime | None) -> timedelta:
        return timedelta(0)

    def tzname(self, dt: datetime | None) -> str:
        return "+01"


Pair = namedtuple("Pair", "a b")


class Thing:
    pass


def _zone_from_file() -> ZoneInfo:
    """A zone read from a file has no name (``key`` is None): nothing to store it as."""
    from importlib import resources

    try:
        data = resources.files("tzdata.zoneinfo.Europe").joinpath("Amsterdam").read_bytes()
    except ModuleNotFoundError:
        data = Path("/usr/share/zoneinfo/Europe/Amsterdam").read_bytes()
    import io

    return ZoneInfo.from_file(io.BytesIO(data))


def _nested(depth: int, kind: type = list) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = kind([value])
    return value


loop: list[Any] = []
loop.append(loop)

NOT_STORED: list[tuple[str, Any, str]] = [
    ("object", object(), "object is not a type"),
    ("instance", Thing(), "test_codec.Thing is not a type"),
    ("deep-inside", {"rows": [1, {"x": Thing()}]}, "Thing is not a type"),
    ("ordered-dict", OrderedDict(a=1), "OrderedDict"),
    ("defaultdict", defaultdict(list, a=[1]), "defaultdict"),
    ("namedtuple", Pair(1, 2), "Pair"),
    ("enum", Color.RED, "Color"),
    ("int-enum", Level.HIGH, "Level"),
    ("str-enum", Name.A, "Name"),
    ("datetime-subclass", Stamp(2026, 1, 1), "Stamp"),
    (
        "custom-tzinfo",
        datetime(2026, 1, 1, tzinfo=Offset()),
        "with tzinfo tests.test_codec.Offset",
    ),
    ("zone-without-key", datetime(2026, 1, 1, tzinfo=_zone_from_file()), "ZoneInfo"),
    ("bytearray", bytearray(b"x"), "bytearray"),
    ("complex", 1j, "complex"),
    ("lone-surrogate", "\ud800", "surrogates"),
    ("contains-itself", loop, "nested more than 254 levels deep, or contains itself"),
    ("too-deep", _nested(300), "nested more than 254 levels deep"),
    ("too-deep-tagged", _nested(300, tuple), "nested more than 254 levels deep"),
]


@pytest.mark.parametrize(
    ("value", "message"), [v[1:] for v in NOT_STORED], ids=[v[0] for v in NOT_STORED]
)
def test_a_value_that_would_not_read_back_the_same_is_refused(value: Any, message: str) -> None:
    with pytest.raises(codec.NotSerializable, match=message.replace(".", r"\.")):
        codec.encode(value)


def test_too_large_is_refused_under_a_limit() -> None:
    value = ["x" * 100] * 10
    assert len(codec.encode(value, max_bytes=2000)) < 2000
    with pytest.raises(codec.TooLarge, match=r"\d+ bytes stored is more than result_max_bytes"):
        codec.encode(value, max_bytes=1000)
    with pytest.raises(codec.TooLarge):
        codec.encode((value,), max_bytes=1000)  # the tagged path is measured too


@pytest.mark.parametrize(
    "stored",
    [
        b'{"__sluiceway__":"pickle","value":"gASV"}',
        b'{"__sluiceway__":"tuple"}',
        b'{"__sluiceway__":"float","value":"1.5"}',
        b'{"__sluiceway__":"date","value":"yesterday"}',
        b'{"__sluiceway__":"datetime","value":"2026-01-01T00:00:00","zone":"Mars/Olympus"}',
    ],
)
def test_a_tag_that_cannot_be_read_is_an_error_not_a_wrong_value(stored: bytes) -> None:
    with pytest.raises(codec.Undecodable):
        codec.decode(stored)


# --- types registered by other modules (Branch, from runtime.define.task) ---


class Point:
    """A type of a layer above the codec, registered the way ``Branch`` is."""

    def __init__(self, x: int, at: datetime) -> None:
        self.x, self.at = x, at

    def __eq__(self, other: object) -> bool:
        return type(other) is Point and (self.x, self.at) == (other.x, other.at)

    __hash__ = None  # type: ignore[assignment]


codec.register("test.point", Point, lambda p: (p.x, p.at), lambda v: Point(*v))


def test_a_registered_type_is_stored_tagged_and_reads_back() -> None:
    value = {"p": Point(3, WHEN)}
    stored = codec.encode(value)
    assert stored == (
        b'{"p":{"__sluiceway__":"test.point","value":{"__sluiceway__":"tuple","value":'
        b'[3,{"__sluiceway__":"datetime","value":"2026-01-02T03:04:05.123456+00:00"}]}}}'
    )  # what to_json returns is encoded in turn: the tuple and the datetime stay themselves
    assert codec.decode(stored) == value
    assert codec.readable(codec.loads(stored)).startswith('{"p":<tests.test_codec.Point')


def test_a_subclass_of_a_registered_type_is_not_stored() -> None:
    class Point3(Point):
        pass

    with pytest.raises(codec.NotSerializable, match="Point3 is not a type Sluiceway stores"):
        codec.encode(Point3(1, WHEN))


def test_branch_is_registered_by_the_definition_layer_not_known_to_the_codec() -> None:
    assert codec.encode(Branch("a", "b")) == b'{"__sluiceway__":"branch","value":["a","b"]}'
    with open(codec.__file__) as source:
        assert "runtime.define" not in source.read()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("date", "codec kind 'date' is built in and cannot be registered"),
        ("tuple", "codec kind 'tuple' is built in and cannot be registered"),
        ("branch", "codec kind 'branch' is already registered for <class 'runtime.define"),
    ],
)
def test_a_kind_already_taken_cannot_be_registered(kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        codec.register(kind, Point, lambda p: p.x, lambda v: Point(v, WHEN))


def test_the_same_class_registered_again_replaces_it() -> None:
    """A reloaded module makes a new class of the same name; it takes the kind over."""

    def make() -> type:
        class Again:
            def __init__(self, x: int) -> None:
                self.x = x

        return Again

    old, new = make(), make()
    codec.register("test.again", old, lambda a: a.x, old)
    codec.register("test.again", new, lambda a: a.x, new)
    assert type(codec.decode(codec.encode(new(1)))) is new
    with pytest.raises(codec.NotSerializable):
        codec.encode(old(1))


# --- edge cases ---


def test_plain_json_helpers_refuse_what_orjson_cannot_write() -> None:
    assert (
        codec.dumps({1: "x", "when": WHEN})
        == b'{"1":"x","when":"2026-01-02T03:04:05.123456+00:00"}'
    )
    assert codec.dumps_str([1, None]) == "[1,null]"
    assert codec.loads(b'{"a":[1,2.5]}') == codec.loads('{"a":[1,2.5]}') == {"a": [1, 2.5]}
    assert codec.pretty({"a": [1]}) == '{\n  "a": [\n    1\n  ]\n}'
    with pytest.raises(codec.NotSerializable):
        codec.dumps(object())
    with pytest.raises(codec.NotSerializable):
        codec.dumps_str({1j})


def test_the_error_types_are_what_callers_catch() -> None:
    assert issubclass(codec.TooLarge, codec.NotSerializable)
    assert issubclass(codec.Undecodable, ValueError)


@pytest.mark.parametrize(
    "value", ["x" * 20, 10**10, None, True], ids=["str", "int", "none", "bool"]
)
def test_the_size_limit_holds_for_single_plain_values_too(value: Any) -> None:
    size = len(codec.encode(value))
    assert codec.encode(value, max_bytes=size) == codec.encode(value)  # at the limit: fine
    with pytest.raises(codec.TooLarge, match=f"^{size} bytes stored is more than"):
        codec.encode(value, max_bytes=size - 1)


def test_a_key_that_only_starts_like_the_tag_stays_plain() -> None:
    value = {"__sluiceway_note": "mine", "__sluiceway__x": [1]}
    stored = codec.encode(value)
    assert stored == orjson.dumps(value)
    assert same(codec.decode(stored), value)
    assert same(codec.decode_result(stored), value)


def test_a_list_shared_twice_is_written_twice() -> None:
    plain = [1, "a"]
    tagged = [WHEN]
    for value in ([plain, plain], {"a": tagged, "b": tagged}):
        back = codec.decode(codec.encode(value))
        assert same(back, value)


class _Collides:
    """A key with the tag's hash whose ``__eq__`` fails: the value's own method raises."""

    def __hash__(self) -> int:
        return hash(codec.TAG)

    def __eq__(self, other: object) -> bool:
        raise ValueError("cannot compare")


def test_a_value_whose_own_method_fails_is_refused_naming_the_error() -> None:
    with pytest.raises(codec.NotSerializable, match=r"^ValueError: cannot compare$"):
        codec.encode({_Collides(): 1})


def test_only_a_top_level_old_branch_reads_as_a_branch() -> None:
    nested = b'[{"__sluiceway_branch__":["a"]}]'
    assert codec.decode_result(nested) == [{"__sluiceway_branch__": ["a"]}]
    wider = b'{"__sluiceway_branch__":["a"],"other":1}'
    assert codec.decode_result(wider) == {"__sluiceway_branch__": ["a"], "other": 1}
    assert codec.decode(b'{"__sluiceway_branch__":["a"]}') == {"__sluiceway_branch__": ["a"]}


def _malformed(kind: str, value: str) -> Any:
    """A tagged value whose payload is wrong for its kind: short lists and bad decimals
    included (they raised IndexError and InvalidOperation past decode())."""
    stored = f'{{"__sluiceway__":"{kind}","value":{value}}}'.encode()
    return pytest.param(stored, kind, id=kind)


@pytest.mark.parametrize(
    ("stored", "kind"),
    [
        _malformed("bytes", '"not base64!"'),
        _malformed("uuid", '"1234"'),
        _malformed("int", '"12x"'),
        _malformed("dict", "[[1]]"),
        _malformed("time", '"25:00"'),
        _malformed("set", "[[1]]"),
        _malformed("timedelta", "[1]"),
        _malformed("decimal", '"one"'),
    ],
)
def test_a_malformed_tagged_value_names_its_kind(stored: bytes, kind: str) -> None:
    with pytest.raises(codec.Undecodable, match=f"^malformed stored {kind} value "):
        codec.decode(stored)


def test_an_unknown_tag_says_a_newer_version_may_have_written_it() -> None:
    with pytest.raises(
        codec.Undecodable, match=r"unknown stored value tag 'pickle' \(written by a newer"
    ):
        codec.decode(b'[1, {"__sluiceway__":"pickle","value":"gASV"}]')


def test_readable_shows_a_tag_it_cannot_read_as_the_json_it_is() -> None:
    view = codec.loads(
        b'{"a":[{"__sluiceway__":"pickle","value":"gASV"},{"__sluiceway__":"tuple","value":[1]}]}'
    )
    assert codec.readable(view) == '{"a":[{"__sluiceway__":"pickle","value":"gASV"},(1,)]}'


def test_timestamps_are_utc_with_a_z_and_none_stays_none() -> None:
    local = datetime(2026, 7, 1, 14, 30, tzinfo=AMS)
    assert codec.iso(local) == "2026-07-01T12:30:00Z"
    assert codec.iso(WHEN) == "2026-01-02T03:04:05.123456Z"
    assert codec.iso(None) is None
    assert codec.parse_iso(None) is None
    back = codec.parse_iso(codec.iso(local))
    assert back == local
    assert back is not None
    assert back.utcoffset() == timedelta(0)
