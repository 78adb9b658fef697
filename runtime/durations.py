"""Durations as users write them: seconds, or strings like "30s", "15m", "2h", "1d", "1h30m"."""

from __future__ import annotations

import math
import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")

# The longest duration anything takes: a year. Longer is a typo (1e12 seconds is 31,700
# years), and an instant that far ahead overflows datetime arithmetic (past the year 9999).
MAX_SECONDS = 366 * 86400.0


def parse_duration(value: object, *, what: str = "duration", at_most: float = MAX_SECONDS) -> float:
    """Return *value* in seconds.

    :param value: a non-negative number of seconds, or a string such as ``"90s"``, ``"15m"``,
        ``"1h30m"``
    :param what: names the setting in the error message
    :param at_most: the longest accepted, in seconds (default a year, 366 days)
    :raises ValueError: with a message naming *what* and the bad value
    """
    if isinstance(value, bool):
        raise ValueError(f"{what} must be seconds or a string like '30s', not {value!r}")
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            seconds = math.inf
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(text):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(text) or not text:
                raise ValueError(
                    f"{what} {value!r} is not a duration (use seconds or e.g. '30s', '15m', '2h')"
                ) from None
    else:
        raise ValueError(f"{what} must be seconds or a string like '30s', not {value!r}")
    if seconds < 0 or math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{what} must be a finite, non-negative duration, not {value!r}")
    if seconds > at_most:
        raise ValueError(f"{what} must be at most {_words(at_most)}, not {value!r}")
    return seconds


def _words(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} seconds"
