"""Trigger specs: macros, validation messages, equality and the JSON form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import get_args

import pytest

from runtime.define.triggers import (
    MACROS,
    CatchUp,
    CatchupPolicy,
    CronTrigger,
    EveryTrigger,
    ScheduleError,
    cron,
    every,
    load_zone,
)
from runtime.errors import SluicewayError

MACRO_TABLE = [
    ("@hourly", "0 * * * *"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@weekly", "0 0 * * 0"),
    ("@monthly", "0 0 1 * *"),
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@Daily", "0 0 * * *"),
]


@pytest.mark.parametrize(("macro", "fields"), MACRO_TABLE)
def test_macros_expand_to_debian_cron_fields(macro: str, fields: str) -> None:
    spec = cron(macro)
    assert (spec.fields, spec.problems) == (fields, ())


def test_the_table_covers_every_macro() -> None:
    assert set(MACROS) == {macro.lower() for macro, _ in MACRO_TABLE}


@pytest.mark.parametrize(
    "expr",
    ["0 2 * * *", "*/15 * * * *", "30 1 * * 1-5", "0 0 L * *", "0 9 * JAN-MAR MON#1", "0 0 29 2 *"],
)
def test_valid_expressions_have_no_problems(expr: str) -> None:
    spec = cron(expr, tz="Europe/Amsterdam")
    assert spec.problems == ()
    assert spec.check() is spec


def test_extra_whitespace_is_normalised() -> None:
    assert cron("  0   2 * *\t* ").fields == "0 2 * * *"


@pytest.mark.parametrize(
    ("expr", "tz", "message"),
    [
        (
            "61 * * * *",
            "UTC",
            "cron('61 * * * *'): bad minute field '61' (allowed: 0-59; lists, ranges, steps)",
        ),
        (
            "0 24 * * *",
            "UTC",
            "cron('0 24 * * *'): bad hour field '24' (allowed: 0-23; lists, ranges, steps)",
        ),
        (
            "0 0 31 2 *",
            "UTC",
            "cron('0 0 31 2 *'): day-of-month '31' never occurs in month '2'",
        ),
        (
            "0 0 32 * *",
            "UTC",
            (
                "cron('0 0 32 * *'): bad day-of-month field '32' "
                "(allowed: 1-31, L or LW; lists, ranges, steps)"
            ),
        ),
        (
            "0 0 * 13 *",
            "UTC",
            (
                "cron('0 0 * 13 *'): bad month field '13' "
                "(allowed: 1-12 or JAN-DEC; lists, ranges, steps)"
            ),
        ),
        (
            "0 0 * * MON#6",
            "UTC",
            (
                "cron('0 0 * * MON#6'): bad day-of-week field 'MON#6' "
                "(allowed: 0-7 or SUN-SAT, with L or #n; lists, ranges, steps)"
            ),
        ),
        (
            "*/0 * * * *",
            "UTC",
            "cron('*/0 * * * *'): bad minute field '*/0' (allowed: 0-59; lists, ranges, steps)",
        ),
        (
            "* * *",
            "UTC",
            (
                "cron('* * *'): expected 5 fields (minute hour day-of-month month day-of-week) "
                "or a macro such as '@daily', got 3"
            ),
        ),
        (
            "0 0 0 * * *",
            "UTC",
            (
                "cron('0 0 0 * * *'): expected 5 fields (minute hour day-of-month month "
                "day-of-week) or a macro such as '@daily', got 6"
            ),
        ),
        (
            "@reboot",
            "UTC",
            (
                "cron('@reboot'): unknown macro '@reboot' (known: @annually, @daily, @hourly, "
                "@midnight, @monthly, @weekly, @yearly)"
            ),
        ),
        (
            "0 2 * * *",
            "Mars/Olympus_Mons",
            (
                "cron('0 2 * * *', tz='Mars/Olympus_Mons'): unknown time zone 'Mars/Olympus_Mons' "
                "(use an IANA name such as 'Europe/Amsterdam')"
            ),
        ),
        (
            "0 2 * * *",
            "../../etc/passwd",
            (
                "cron('0 2 * * *', tz='../../etc/passwd'): unknown time zone '../../etc/passwd' "
                "(use an IANA name such as 'Europe/Amsterdam')"
            ),
        ),
    ],
    ids=[
        "minute-61",
        "hour-24",
        "feb-31",
        "day-32",
        "month-13",
        "sixth-monday",
        "step-zero",
        "three-fields",
        "six-fields",
        "reboot-macro",
        "unknown-zone",
        "zone-path",
    ],
)
def test_bad_specs_name_expression_field_and_value(expr: str, tz: str, message: str) -> None:
    spec = cron(expr, tz=tz)
    assert spec.problems == (message,)
    with pytest.raises(ScheduleError) as caught:
        spec.check()
    assert str(caught.value) == message
    assert caught.value.problems == (message,)


def test_every_problem_of_a_spec_is_listed() -> None:
    spec = cron("0 0 * 13 *", tz="Nowhere/Atlantis")
    assert [p.split(": ", 1)[1].split(" ", 2)[:2] for p in spec.problems] == [
        ["bad", "month"],
        ["unknown", "time"],
    ]


def test_non_string_expression_and_zone_are_problems() -> None:
    spec = CronTrigger(5, tz=None)  # type: ignore[arg-type]  # wrong types are the point
    assert spec.problems == (
        "cron(5, tz=None): expression must be a string such as '0 2 * * *', not 5",
        "cron(5, tz=None): tz must be a time zone name such as 'Europe/Amsterdam', not None",
    )


def test_schedule_error_is_a_sluiceway_error() -> None:
    assert issubclass(ScheduleError, SluicewayError)


def test_invalid_spec_refuses_its_zone() -> None:
    with pytest.raises(ScheduleError, match="Mars/Olympus"):
        _ = cron("0 2 * * *", tz="Mars/Olympus").zone


def test_load_zone() -> None:
    assert load_zone("UTC") is UTC
    assert str(load_zone("America/New_York")) == "America/New_York"
    with pytest.raises(ScheduleError, match=r"unknown time zone 'Europe/Amsterdm'"):
        load_zone("Europe/Amsterdm")


@pytest.mark.parametrize(
    ("expr", "wall_clock"),
    [
        ("30 2 * * *", True),
        ("@daily", True),
        ("0 9-17 * * 1-5", True),
        ("@hourly", False),
        ("*/15 * * * *", False),
        ("0 */2 * * *", False),
        ("*/15 2 * * *", False),
    ],
)
def test_follows_wall_clock(expr: str, wall_clock: bool) -> None:
    assert cron(expr, tz="Europe/Amsterdam").follows_wall_clock is wall_clock


@pytest.mark.parametrize(
    ("duration", "interval"),
    [
        ("15m", timedelta(minutes=15)),
        ("1h30m", timedelta(minutes=90)),
        (90, timedelta(seconds=90)),
        (2.5, timedelta(seconds=2.5)),
        (timedelta(hours=6), timedelta(hours=6)),
    ],
)
def test_every_parses_durations(duration: float | str | timedelta, interval: timedelta) -> None:
    spec = every(duration)
    assert (spec.interval, spec.problems) == (interval, ())


@pytest.mark.parametrize(
    ("duration", "start", "message"),
    [
        ("0s", None, "every('0s'): interval must be at least 1s, not '0s'"),
        (0.5, None, "every(0.5): interval must be at least 1s, not 0.5"),
        (
            "soon",
            None,
            (
                "every('soon'): interval 'soon' is not a duration (use seconds or e.g. '30s', "
                "'15m', '2h')"
            ),
        ),
        (
            -5,
            None,
            "every(-5): interval must be a finite, non-negative duration, not -5",
        ),
        (
            "1h",
            datetime(2026, 1, 1),  # noqa: DTZ001  # the naive datetime under test
            (
                "every('1h', start=2026-01-01T00:00:00): start must have a time zone "
                "(e.g. tzinfo=UTC), not naive 2026-01-01 00:00:00"
            ),
        ),
    ],
    ids=["zero", "sub-second", "not-a-duration", "negative", "naive-start"],
)
def test_bad_every_specs(duration: float | str, start: datetime | None, message: str) -> None:
    spec = every(duration, start=start)
    assert spec.problems == (message,)
    with pytest.raises(ScheduleError, match="every"):
        spec.check()


def test_every_start_is_kept_in_utc() -> None:
    start = datetime(2026, 3, 29, 3, 0, tzinfo=timezone(timedelta(hours=2)))
    kept = every("1h", start=start).start
    assert kept == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert kept is not None
    assert kept.tzinfo is UTC


def test_specs_are_frozen_hashable_values() -> None:
    assert cron("0 2 * * *", tz="Europe/Amsterdam") == cron("0 2 * * *", "Europe/Amsterdam")
    assert cron("0 2 * * *") != cron("0 2 * * *", tz="Europe/Amsterdam")
    assert every("15m") == every(900) == every(timedelta(minutes=15))
    assert len({every("15m"), every(900), cron("@daily"), cron("@daily")}) == 2
    with pytest.raises(AttributeError):
        cron("@daily").expr = "@hourly"  # type: ignore[misc]  # assigning is what must fail


def test_str_and_to_dict() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert str(cron("@daily")) == "cron('@daily')"
    assert str(cron("0 2 * * *", "Europe/Amsterdam")) == "cron('0 2 * * *', tz='Europe/Amsterdam')"
    assert str(every("15m", start=start)) == "every('15m', start=2026-01-01T00:00:00+00:00)"
    assert cron("0 2 * * *", "Europe/Amsterdam").to_dict() == {
        "kind": "cron",
        "expr": "0 2 * * *",
        "tz": "Europe/Amsterdam",
    }
    assert every("15m", start=start).to_dict() == {
        "kind": "every",
        "seconds": 900.0,
        "start": "2026-01-01T00:00:00+00:00",
    }
    assert isinstance(every("1m"), EveryTrigger)


def test_the_catchup_policies_are_the_same_as_type_and_as_enum() -> None:
    """``Flow(catchup=...)`` is typed with the Literal; the planner decides with the enum."""
    assert get_args(CatchupPolicy) == tuple(c.value for c in CatchUp)
