"""Fire times of time triggers: aware UTC instants, under the DST policy declared here.

Every instant this module returns is an aware datetime in UTC; the store keeps them so, and
:func:`to_local` turns one into the flow's zone for display.

DST policy
----------
``cron()`` schedules are evaluated by cronsim 2.8 (pinned), which behaves as Debian cron. There
are two kinds of cron schedule, told apart by the minute and hour fields:

* **Wall-clock schedules**: minute and hour both fixed, not starting with ``*`` (``30 2 * * *``,
  ``0 9-17 * * 1-5``, and the macros ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``). Each
  matching local wall time fires exactly once:

  - a wall time that does not exist (the spring gap) fires once, at the first valid instant
    after it: ``30 2 * * *`` in Europe/Amsterdam fires at 03:00 CEST on 2026-03-29. Several
    missing wall times (``0,30 2 * * *``) fire once together at that instant.
  - a wall time that happens twice (the autumn overlap) fires once, on its first occurrence:
    ``30 1 * * *`` in America/New_York fires at 01:30 EDT on 2026-11-01, not again at 01:30 EST.

* **Real-time schedules**: minute or hour starts with ``*`` (``@hourly`` = ``0 * * * *``,
  ``*/15 * * * *``, ``0 */2 * * *``). They fire at every real instant whose local wall time
  matches: in both repeated hours in autumn (each real hour fires), and not for the wall times
  of the spring gap, which no real instant has. So ``@hourly`` fires once per real hour, always;
  but ``*/15 2 * * *`` does not fire at all on a spring-forward day whose 02:00-03:00 is missing
  (Debian cron does the same).

Known deviation (cronsim 2.8): in Australia/Lord_Howe, whose clocks move by 30 minutes, a
real-time schedule with a fixed hour (``*/20 2 * * *``) misses the fires in that hour after the
autumn change; ``tests/scheduling/test_firetimes.py`` keeps it as a strict xfail.

``every()`` follows absolute time: instants are ``anchor + k * interval`` in UTC arithmetic, the
anchor being the spec's ``start`` or the Unix epoch. DST never moves them, so ``every("15m")``
fires every 15 real minutes through both changes, and the same instants come back after a
restart.

Pure: no I/O and no clock reads; the caller says what "after" is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, tzinfo

from cronsim import CronSim

from runtime.define.triggers import CronTrigger, EveryTrigger, TimeTrigger, load_zone

__all__ = ["fire_times", "instant_json", "iso_utc", "to_local"]


def fire_times(spec: TimeTrigger, after: datetime) -> Iterator[datetime]:
    """Yield the fire instants of *spec* strictly after *after*, in order, as aware UTC.

    Endless for ``every()``; a cron expression that matches nothing for 50 years ends.

    :param spec: a valid trigger spec
    :param after: an aware datetime (any zone)
    :raises ScheduleError: when *spec* has problems
    :raises ValueError: when *after* is naive
    """
    _require_aware(after, "after")
    if isinstance(spec, CronTrigger):
        return _cron_times(spec.check(), after)
    if isinstance(spec, EveryTrigger):
        return _every_times(spec.check(), after)
    raise TypeError(f"not a time trigger spec: {spec!r}")


def _cron_times(spec: CronTrigger, after: datetime) -> Iterator[datetime]:
    # cronsim steps a wall-clock schedule through naive local time and returns fold=0 (the
    # first occurrence); started inside the repeated hour it can return that first occurrence,
    # which lies before `after`. Filtering on real time keeps "strictly after" and "once".
    previous = after.astimezone(UTC)
    for local in CronSim(spec.fields, after.astimezone(spec.zone)):
        instant = local.astimezone(UTC)
        if instant > previous:
            previous = instant
            yield instant


def _every_times(spec: EveryTrigger, after: datetime) -> Iterator[datetime]:
    anchor, step = spec.anchor, spec.interval
    # timedelta // timedelta is exact integer arithmetic on microseconds
    k = 0 if after < anchor else (after - anchor) // step + 1
    instant = anchor + k * step
    while True:
        yield instant
        instant += step


def to_local(instant: datetime, tz: str | tzinfo) -> datetime:
    """Return *instant* in zone *tz* (a name such as ``"Europe/Amsterdam"`` or a tzinfo).

    :raises ScheduleError: when *tz* is an unknown zone name
    :raises ValueError: when *instant* is naive
    """
    _require_aware(instant, "instant")
    return instant.astimezone(load_zone(tz) if isinstance(tz, str) else tz)


def iso_utc(instant: datetime) -> str:
    """Return *instant* as ISO 8601 in UTC with a ``Z``: ``2026-03-29T01:00:00Z``."""
    _require_aware(instant, "instant")
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def instant_json(instant: datetime, tz: str | tzinfo) -> dict[str, str]:
    """Return ``{"utc": "...Z", "local": "...+02:00"}`` for ``sluiceway next --json``."""
    return {"utc": iso_utc(instant), "local": to_local(instant, tz).isoformat()}


def _require_aware(value: datetime, name: str) -> None:
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with tzinfo), not naive {value}")
