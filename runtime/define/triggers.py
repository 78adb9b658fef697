"""Time trigger specs, ``cron()`` and ``every()``, and a flow's catch-up options: frozen data,
validated when made; no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from runtime.durations import parse_duration
from runtime.errors import ScheduleError

__all__ = [
    "DEFAULT_MAX_CATCHUP",
    "MACROS",
    "CatchUp",
    "CatchupPolicy",
    "CronTrigger",
    "EveryTrigger",
    "ScheduleError",
    "TimeTrigger",
    "catchup_problems",
    "cron",
    "every",
    "load_zone",
]

# cronsim knows no macros; these are Debian cron's meanings
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
_ALLOWED = {
    "minute": "0-59",
    "hour": "0-23",
    "day-of-month": "1-31, L or LW",
    "month": "1-12 or JAN-DEC",
    "day-of-week": "0-7 or SUN-SAT, with L or #n",
}
MIN_INTERVAL = timedelta(seconds=1)
# a fixed reference for the parse check: cronsim only parses here, it never iterates
_PARSE_AT = datetime(2000, 1, 1, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CatchupPolicy = Literal["none", "latest", "all"]
"""After downtime, which missed scheduled instants run: ``Flow(catchup=...)``."""
DEFAULT_MAX_CATCHUP = 100


class CatchUp(StrEnum):
    """What to do with scheduled instants missed while the service was not ticking: the
    values of :data:`CatchupPolicy`, as the planner decides with them."""

    NONE = "none"
    LATEST = "latest"
    ALL = "all"


def catchup_problems(catchup: object, max_catchup: object) -> list[str]:
    """Return what is wrong with a flow's ``catchup=`` and ``max_catchup=`` options."""
    problems = []
    if catchup not in get_args(CatchupPolicy):
        choices = ", ".join(repr(c) for c in get_args(CatchupPolicy))
        problems.append(f"catchup must be one of {choices}, not {catchup!r}")
    if not isinstance(max_catchup, int) or isinstance(max_catchup, bool) or max_catchup < 1:
        problems.append(f"max_catchup must be a whole number >= 1, not {max_catchup!r}")
    return problems


def load_zone(name: str) -> tzinfo:
    """Return the time zone called *name* (an IANA name such as ``"Europe/Amsterdam"``).

    :raises ScheduleError: naming the zone when it is unknown
    """
    problem = _zone_problem(name)
    if problem:
        raise ScheduleError(f"tz={name!r}", [problem])
    return _load_zone(name)


def _load_zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def _zone_problem(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return f"tz must be a time zone name such as 'Europe/Amsterdam', not {name!r}"
    try:
        _load_zone(name)
    except (ZoneInfoNotFoundError, ValueError):
        # ValueError: names like "../etc/passwd" that zoneinfo refuses to look up
        return f"unknown time zone {name!r} (use an IANA name such as 'Europe/Amsterdam')"
    return None


def _cron_problems(expr: object) -> tuple[str | None, list[str]]:
    """Return the 5-field form of *expr* (``None`` if it has none) and what is wrong with it."""
    if not isinstance(expr, str):
        return None, [f"expression must be a string such as '0 2 * * *', not {expr!r}"]
    text = expr.strip()
    if text.startswith("@"):
        fields = MACROS.get(text.lower())
        if fields is None:
            known = ", ".join(sorted(MACROS))
            return None, [f"unknown macro {text!r} (known: {known})"]
        return fields, []
    parts = text.split()
    if len(parts) != len(FIELDS):
        names = " ".join(FIELDS)
        return None, [f"expected 5 fields ({names}) or a macro such as '@daily', got {len(parts)}"]
    fields = " ".join(parts)
    try:
        CronSim(fields, _PARSE_AT)
    except CronSimError as exc:
        return None, [_explain(parts, str(exc))]
    return fields, []


def _explain(parts: Sequence[str], message: str) -> str:
    """Turn cronsim's terse ``Bad minute`` into a sentence naming the field and its value."""
    name = message.removeprefix("Bad ").strip()
    if name not in FIELDS:
        return f"cannot parse: {message}"
    value = parts[FIELDS.index(name)]
    if name == "day-of-month":
        try:  # fine alone? then no month in the month field has that day
            CronSim(f"0 0 {value} * *", _PARSE_AT)
        except CronSimError:
            pass
        else:
            return f"day-of-month {value!r} never occurs in month {parts[3]!r}"
    return f"bad {name} field {value!r} (allowed: {_ALLOWED[name]}; lists, ranges, steps)"


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """Fire at the wall times a 5-field cron expression (or macro) matches in zone *tz*.

    Made through :func:`cron`. Invalid specs are still made, so a flow can report every
    problem at once; :attr:`problems` lists them and :meth:`check` raises them.

    :ivar expr: the expression as written, e.g. ``"0 2 * * *"`` or ``"@daily"``
    :ivar tz: the IANA time zone the expression's wall times are in
    :ivar fields: the 5-field form (macros expanded), or ``""`` when *expr* is invalid
    :ivar problems: what is wrong with the spec, empty when it is valid
    """

    expr: str
    tz: str = "UTC"
    fields: str = field(init=False, default="", compare=False)
    problems: tuple[str, ...] = field(init=False, default=(), compare=False)

    def __post_init__(self) -> None:
        fields, problems = _cron_problems(self.expr)
        tz_problem = _zone_problem(self.tz)
        if tz_problem:
            problems.append(tz_problem)
        object.__setattr__(self, "fields", fields or "")
        object.__setattr__(self, "problems", tuple(f"{self}: {p}" for p in problems))

    def __str__(self) -> str:
        return (
            f"cron({self.expr!r})" if self.tz == "UTC" else f"cron({self.expr!r}, tz={self.tz!r})"
        )

    @property
    def zone(self) -> tzinfo:
        """The zone of :attr:`tz`; raises :class:`ScheduleError` when the spec is invalid."""
        self.check()
        return _load_zone(self.tz)

    @property
    def follows_wall_clock(self) -> bool:
        """True when minute and hour are both fixed (e.g. daily at 02:30): such a schedule
        fires once per matching local wall time. False (e.g. hourly, ``*/15``): it fires
        at every real instant whose local wall time matches. See ``runtime.scheduling.firetimes``."""
        minute, hour = self.check().fields.split()[:2]
        return not minute.startswith("*") and not hour.startswith("*")

    def check(self) -> CronTrigger:
        """Return the spec itself when valid.

        :raises ScheduleError: listing every problem
        """
        if self.problems:
            raise ScheduleError(str(self), self.problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, for a run's ``trigger`` column."""
        return {"kind": "cron", "expr": self.expr, "tz": self.tz}


@dataclass(frozen=True, slots=True)
class EveryTrigger:
    """Fire every *interval* in absolute time, at ``anchor + k * interval``.

    Made through :func:`every`. The anchor is *start* when given (the first fire instant), else
    the Unix epoch, so fire instants stay the same across restarts: ``every("15m")`` fires at
    :00, :15, :30 and :45 UTC. Invalid specs are still made; see :attr:`problems`.

    :ivar duration: the interval as written: seconds, a string such as ``"15m"``, a timedelta
    :ivar start: the first fire instant (aware, kept in UTC), or ``None`` for the epoch anchor
    :ivar interval: *duration* as a timedelta (zero when it is invalid)
    :ivar problems: what is wrong with the spec, empty when it is valid
    """

    duration: float | str | timedelta = field(compare=False)
    start: datetime | None = None
    interval: timedelta = field(init=False, default=timedelta(0))
    problems: tuple[str, ...] = field(init=False, default=(), compare=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        interval = timedelta(0)
        if isinstance(self.duration, timedelta):
            interval = self.duration
        else:
            try:
                interval = timedelta(seconds=parse_duration(self.duration, what="interval"))
            except ValueError as exc:
                problems.append(str(exc))
        if not problems and interval < MIN_INTERVAL:
            problems.append(f"interval must be at least 1s, not {self.duration!r}")
        object.__setattr__(self, "interval", interval)
        if self.start is not None:
            if not isinstance(self.start, datetime):
                problems.append(f"start must be an aware datetime, not {self.start!r}")
            elif self.start.utcoffset() is None:
                problems.append(
                    f"start must have a time zone (e.g. tzinfo=UTC), not naive {self.start}"
                )
            else:
                object.__setattr__(self, "start", self.start.astimezone(UTC))
        object.__setattr__(self, "problems", tuple(f"{self}: {p}" for p in problems))

    def __str__(self) -> str:
        if self.start is None:
            return f"every({self.duration!r})"
        start = self.start.isoformat() if isinstance(self.start, datetime) else repr(self.start)
        return f"every({self.duration!r}, start={start})"

    @property
    def anchor(self) -> datetime:
        """The instant fire times count from: *start*, or the Unix epoch."""
        return self.check().start or EPOCH

    def check(self) -> EveryTrigger:
        """Return the spec itself when valid.

        :raises ScheduleError: listing every problem
        """
        if self.problems:
            raise ScheduleError(str(self), self.problems)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, for a run's ``trigger`` column."""
        start = self.start.isoformat() if self.start is not None else None
        return {"kind": "every", "seconds": self.interval.total_seconds(), "start": start}


TimeTrigger = CronTrigger | EveryTrigger


def cron(expr: str, tz: str = "UTC") -> CronTrigger:
    """Fire at the wall times *expr* matches in zone *tz*.

    ``cron("0 2 * * *", tz="Europe/Amsterdam")``. Five fields (minute hour day-of-month month
    day-of-week, Debian cron syntax), or one of ``@hourly @daily @midnight @weekly @monthly
    @yearly @annually``. On DST changes a daily time that does not exist fires at the first
    valid instant after it, and one that happens twice fires once, on its first occurrence;
    hourly schedules fire in every real hour (``runtime.scheduling.firetimes`` has the full policy).

    :param expr: the cron expression or macro
    :param tz: the IANA zone the wall times are in
    :returns: the spec; invalid specs list their problems in ``.problems``
    """
    return CronTrigger(expr, tz)


def every(duration: float | str | timedelta, *, start: datetime | None = None) -> EveryTrigger:
    """Fire every *duration* in absolute time (DST changes do not move it).

    ``every("15m")``, ``every("1h30m")``, ``every(90)``, ``every(timedelta(hours=6))``.

    :param duration: seconds, a string such as ``"15m"``, or a timedelta; at least 1s
    :param start: the first fire instant (aware); without it instants are counted from the
        Unix epoch, so ``every("1h")`` fires on the hour (UTC)
    :returns: the spec; invalid specs list their problems in ``.problems``
    """
    return EveryTrigger(duration, start)
