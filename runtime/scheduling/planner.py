"""Tick planning: which scheduled instants fire now, and which were missed; pure functions.

No I/O, no clock reads, no awaits: the tick loop passes ``now`` from its clock and the ``last``
instant it stored, and gets a :class:`Plan` back.

How the tick loop uses it
-------------------------
``last`` is the newest scheduled instant already dealt with (fired or skipped): store
``plan.cursor`` after committing the runs of ``plan.fire``, and pass it back as ``last`` next time
(also after a restart; never the wall time at start). Then sleep until ``plan.next`` (or until the
clock says it has passed) and plan again. The due instants are those in ``(last, now]``.

On time or missed: an instant is *on time* when ``now - instant < grace``. A loop that wakes at
its instant is milliseconds late; an instant further back than ``grace`` was missed (the service
was down, the machine slept, the clock jumped). The catch-up policy then decides:

* ``"none"``: fire the newest due instant only if it is on time; skip everything else.
* ``"latest"`` (default): fire the newest due instant, on time or not; skip the older ones.
* ``"all"``: fire the newest ``max_catchup`` due instants, oldest first; skip the older ones.
  Keeping the newest means the current instant always fires and the cursor moves past what
  was skipped, so a long outage can never turn into an endless backlog.

``last=None`` (the schedule never fired) looks back no further than ``grace``: it fires the
newest instant that is just due, whatever the policy, and nothing older.

Skipped instants are reported by count and first/last, never listed: a week of ``every("1m")``
is 10,080 of them. ``every()`` counts them arithmetically; cron steps through them (cronsim
takes about 4 us per instant, so a year of ``* * * * *`` is about two seconds).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

from runtime.define.triggers import (
    DEFAULT_MAX_CATCHUP,
    CatchUp,
    EveryTrigger,
    ScheduleError,
    TimeTrigger,
    catchup_problems,
)
from runtime.scheduling.firetimes import fire_times

__all__ = [
    "DEFAULT_GRACE",
    "DEFAULT_MAX_CATCHUP",
    "CatchUp",
    "Plan",
    "catchup_problems",
    "instants_between",
    "next_fire",
    "plan_ticks",
    "preview",
]

DEFAULT_GRACE = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one tick decided, all instants aware UTC.

    :ivar fire: the instants to create runs for, oldest first
    :ivar skipped: how many due instants will not run
    :ivar first_skipped: the oldest skipped instant, if any
    :ivar last_skipped: the newest skipped instant, if any
    :ivar cursor: the newest due instant (fired or skipped), else the ``last`` passed in; store
        it and pass it back as ``last``
    :ivar next: the first fire instant after this tick, ``None`` if the schedule has ended
    """

    fire: tuple[datetime, ...] = ()
    skipped: int = 0
    first_skipped: datetime | None = None
    last_skipped: datetime | None = None
    cursor: datetime | None = None
    next: datetime | None = None


def plan_ticks(
    spec: TimeTrigger,
    last: datetime | None,
    now: datetime,
    *,
    catchup: CatchUp | str = CatchUp.LATEST,
    max_catchup: int = DEFAULT_MAX_CATCHUP,
    grace: timedelta = DEFAULT_GRACE,
) -> Plan:
    """Decide which instants in ``(last, now]`` fire, after the catch-up policy.

    :param spec: a valid trigger spec
    :param last: the cursor stored by the previous tick, ``None`` if it never fired
    :param now: the current time from the clock (aware)
    :param catchup: ``"none"``, ``"latest"`` or ``"all"`` (see the module docstring)
    :param max_catchup: with ``"all"``, the most instants one tick fires
    :param grace: how late an instant may be and still count as on time (> 0)
    :raises ScheduleError: for an invalid spec, policy, ``max_catchup`` or ``grace``
    :raises ValueError: when *now* or *last* is naive
    """
    problems = catchup_problems(catchup, max_catchup)
    if grace <= timedelta(0):
        problems.append(f"grace must be positive, not {grace}")
    if problems:
        raise ScheduleError(f"catchup={catchup!r}", problems)
    policy = CatchUp(catchup)
    now = _utc(now, "now")
    if last is not None:
        last = _utc(last, "last")
    start = now - grace if last is None else last
    keep = max_catchup if policy is CatchUp.ALL and last is not None else 1
    due = _due(spec, start, now, keep)

    fire = due.newest
    if fire and (policy is CatchUp.NONE or last is None) and now - fire[-1] >= grace:
        fire = ()
    skipped = due.count - len(fire)
    if not skipped:
        first_skipped = last_skipped = None
    else:
        first_skipped = due.first
        last_skipped = due.newest[-1] if not fire else due.before_newest
    return Plan(
        fire=fire,
        skipped=skipped,
        first_skipped=first_skipped,
        last_skipped=last_skipped,
        cursor=due.newest[-1] if due.newest else last,
        next=due.next,
    )


def next_fire(spec: TimeTrigger, now: datetime) -> datetime | None:
    """Return the first fire instant strictly after *now*, ``None`` if there is none."""
    return next(fire_times(spec, now), None)


def preview(spec: TimeTrigger, now: datetime, n: int) -> list[datetime]:
    """Return the next *n* fire instants strictly after *now* (for ``sluiceway next``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    return list(islice(fire_times(spec, now), n))


def instants_between(spec: TimeTrigger, start: datetime, end: datetime) -> Iterator[datetime]:
    """Yield the fire instants in ``[start, end)``, for backfill; both bounds aware."""
    start, end = _utc(start, "start"), _utc(end, "end")
    for instant in fire_times(spec, start - timedelta(microseconds=1)):
        if instant >= end:
            return
        yield instant


@dataclass(frozen=True, slots=True)
class _Due:
    """The instants in ``(start, now]``: how many, the oldest, the newest few, and the next."""

    count: int
    first: datetime | None
    newest: tuple[datetime, ...]  # the newest `keep` of them, oldest first
    before_newest: datetime | None  # the one just before `newest`, if any
    next: datetime | None


def _due(spec: TimeTrigger, start: datetime, now: datetime, keep: int) -> _Due:
    if isinstance(spec, EveryTrigger):
        return _due_every(spec.check(), start, now, keep)
    newest: deque[datetime] = deque(maxlen=keep)
    count, first, before, upcoming = 0, None, None, None
    for instant in fire_times(spec, start):
        if instant > now:
            upcoming = instant
            break
        count += 1
        first = first or instant
        if len(newest) == keep:
            before = newest[0]
        newest.append(instant)
    return _Due(count, first, tuple(newest), before, upcoming)


def _due_every(spec: EveryTrigger, start: datetime, now: datetime, keep: int) -> _Due:
    anchor, step = spec.anchor, spec.interval

    def at(k: int) -> datetime:
        return anchor + k * step

    first_k = 0 if start < anchor else (start - anchor) // step + 1
    last_k = -1 if now < anchor else (now - anchor) // step
    count = max(0, last_k - first_k + 1)
    kept = min(keep, count)
    newest = tuple(at(k) for k in range(last_k - kept + 1, last_k + 1))
    before = at(last_k - kept) if count > kept else None
    return _Due(count, at(first_k) if count else None, newest, before, at(max(first_k, last_k + 1)))


def _utc(value: datetime, name: str) -> datetime:
    if value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime (with tzinfo), not naive {value}")
    return value.astimezone(UTC)
