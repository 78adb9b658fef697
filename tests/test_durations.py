from __future__ import annotations

import pytest

from runtime.durations import parse_duration


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("30s", 30.0),
        ("15m", 900.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1h30m", 5400.0),
        ("1h 30m", 5400.0),
        ("500ms", 0.5),
        ("2H", 7200.0),
        ("1.5", 1.5),
        (" 45 ", 45.0),
        (90, 90.0),
        (2.5, 2.5),
        (0, 0.0),
    ],
)
def test_parses_seconds_and_unit_strings(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "retry_delay 'abc' is not a duration (use seconds or e.g. '30s'"),
        ("", "retry_delay '' is not a duration"),
        ("1m30", "retry_delay '1m30' is not a duration"),
        ("30x", "retry_delay '30x' is not a duration"),
        ("-1", "retry_delay must be a finite, non-negative duration, not '-1'"),
        (-5, "retry_delay must be a finite, non-negative duration, not -5"),
        ("nan", "retry_delay must be a finite, non-negative duration, not 'nan'"),
        ("inf", "retry_delay must be a finite, non-negative duration, not 'inf'"),
        (True, "retry_delay must be seconds or a string like '30s', not True"),
        (None, "retry_delay must be seconds or a string like '30s', not None"),
        ([30], "retry_delay must be seconds or a string like '30s', not [30]"),
    ],
)
def test_bad_value_names_the_setting(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=r"^retry_delay ") as info:
        parse_duration(value, what="retry_delay")
    assert message in str(info.value)


def test_setting_defaults_to_duration_in_message() -> None:
    with pytest.raises(ValueError, match=r"^duration 'soon' is not a duration"):
        parse_duration("soon")
