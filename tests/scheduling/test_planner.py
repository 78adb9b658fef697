"""Tick planning: catch-up policies, grace, last=None, DST days, and a simulated tick loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import takewhile

import pytest

from runtime.define.triggers import ScheduleError, TimeTrigger, cron, every
from runtime.scheduling.firetimes import fire_times
from runtime.scheduling.planner import (
    DEFAULT_GRACE,
    CatchUp,
    Plan,
    catchup_problems,
    instants_between,
    next_fire,
    plan_ticks,
    preview,
)

HOURLY = cron("@hourly")


def utc(hour: int, minute: int = 0, second: float = 0, day: int = 10) -> datetime:
    whole = int(second)
    micro = round((second - whole) * 1_000_000)
    return datetime(2026, 1, day, hour, minute, whole, micro, tzinfo=UTC)


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


# (policy, max_catchup, last, now) -> Plan; hourly in UTC, grace one minute
CATCHUP_TABLE = [
    # --- normal ticking: the loop wakes a few ms after the instant ---
    ("none", 100, utc(9), utc(10, 0, 0.003), Plan(fire=(utc(10),), cursor=utc(10), next=utc(11))),
    ("latest", 100, utc(9), utc(10, 0, 0.003), Plan(fire=(utc(10),), cursor=utc(10), next=utc(11))),
    ("all", 100, utc(9), utc(10, 0, 0.003), Plan(fire=(utc(10),), cursor=utc(10), next=utc(11))),
    # --- before the next tick: nothing ---
    ("latest", 100, utc(9), utc(9, 59), Plan(cursor=utc(9), next=utc(10))),
    # --- down 06:00-10:00:05, the 10:00 instant still on time ---
    ("none", 100, utc(6), utc(10, 0, 5),
     Plan(fire=(utc(10),), skipped=3, first_skipped=utc(7), last_skipped=utc(9),
          cursor=utc(10), next=utc(11))),
    # --- down until 10:30: 10:00 is 30 minutes late, so missed ---
    ("none", 100, utc(6), utc(10, 30),
     Plan(skipped=4, first_skipped=utc(7), last_skipped=utc(10), cursor=utc(10), next=utc(11))),
    ("latest", 100, utc(6), utc(10, 30),
     Plan(fire=(utc(10),), skipped=3, first_skipped=utc(7), last_skipped=utc(9),
          cursor=utc(10), next=utc(11))),
    ("all", 100, utc(6), utc(10, 30),
     Plan(fire=(utc(7), utc(8), utc(9), utc(10)), cursor=utc(10), next=utc(11))),
    ("all", 2, utc(6), utc(10, 30),
     Plan(fire=(utc(9), utc(10)), skipped=2, first_skipped=utc(7), last_skipped=utc(8),
          cursor=utc(10), next=utc(11))),
    ("all", 4, utc(6), utc(10, 30),
     Plan(fire=(utc(7), utc(8), utc(9), utc(10)), cursor=utc(10), next=utc(11))),
    ("all", 1, utc(6), utc(10, 30),
     Plan(fire=(utc(10),), skipped=3, first_skipped=utc(7), last_skipped=utc(9),
          cursor=utc(10), next=utc(11))),
    # --- exactly grace late is missed; a microsecond less is on time ---
    ("none", 100, utc(9), utc(10, 1),
     Plan(skipped=1, first_skipped=utc(10), last_skipped=utc(10), cursor=utc(10), next=utc(11))),
    ("none", 100, utc(9), utc(10, 0, 59.999999), Plan(fire=(utc(10),), cursor=utc(10), next=utc(11))),
    # --- the instant equal to last already happened; now equal to an instant is due ---
    ("latest", 100, utc(10), utc(10), Plan(cursor=utc(10), next=utc(11))),
    ("latest", 100, utc(9), utc(10), Plan(fire=(utc(10),), cursor=utc(10), next=utc(11))),
    # --- the clock jumped back behind last: nothing, and nothing before last again ---
    ("all", 100, utc(10), utc(8, 30), Plan(cursor=utc(10), next=utc(11))),
]  # fmt: skip
CATCHUP_IDS = [
    "none-on-time", "latest-on-time", "all-on-time", "before-next-tick",
    "none-down-current-on-time", "none-down-all-missed", "latest-down", "all-down",
    "all-max-2", "all-max-exact", "all-max-1", "none-exactly-grace-late",
    "none-just-inside-grace", "last-equals-now", "now-equals-instant", "clock-jumped-back",
]  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "max_catchup", "last", "now", "expected"), CATCHUP_TABLE, ids=CATCHUP_IDS
)
def test_catchup_policies(
    policy: str, max_catchup: int, last: datetime, now: datetime, expected: Plan
) -> None:
    assert plan_ticks(HOURLY, last, now, catchup=policy, max_catchup=max_catchup) == expected


@pytest.mark.parametrize("policy", list(CatchUp))
@pytest.mark.parametrize(
    ("now", "expected"),
    [
        (utc(10, 0, 0.003), Plan(fire=(utc(10),), cursor=utc(10), next=utc(11))),
        (utc(10, 0, 59), Plan(fire=(utc(10),), cursor=utc(10), next=utc(11))),
        (utc(10, 1), Plan(next=utc(11))),
        (utc(10, 30), Plan(next=utc(11))),
    ],
    ids=["just-due", "59s-late", "grace-late", "long-past"],
)
def test_never_fired_fires_only_what_is_just_due(
    policy: CatchUp, now: datetime, expected: Plan
) -> None:
    assert plan_ticks(HOURLY, None, now, catchup=policy) == expected


def test_never_fired_reports_nothing_older_than_grace() -> None:
    plan = plan_ticks(every("10s"), None, utc(10, 0, 35), catchup="all")
    # 09:59:40 .. 10:00:30 are within the minute; only the newest fires
    assert plan.fire == (utc(10, 0, 30),)
    assert (plan.skipped, plan.first_skipped, plan.last_skipped) == (
        5,
        utc(9, 59, 40),
        utc(10, 0, 20),
    )


def test_grace_is_configurable() -> None:
    plan = plan_ticks(HOURLY, utc(9), utc(10, 30), catchup="none", grace=timedelta(hours=1))
    assert plan.fire == (utc(10),)


@pytest.mark.parametrize("policy", list(CatchUp))
@pytest.mark.parametrize(
    ("last", "now"),
    [
        (utc(6), utc(10, 30)),
        (utc(6, 7), utc(10, 0, 30)),
        (utc(9, 59, 59), utc(10, 0, 1)),
        (utc(10, 0, 1), utc(9, 0)),
        (utc(0), utc(0, day=17)),
    ],
)
def test_every_plans_like_the_same_cron(policy: CatchUp, last: datetime, now: datetime) -> None:
    """every() is counted arithmetically, cron by iteration: both must agree."""
    for max_catchup in (1, 3, 100):
        assert plan_ticks(
            every("15m"), last, now, catchup=policy, max_catchup=max_catchup
        ) == plan_ticks(cron("*/15 * * * *"), last, now, catchup=policy, max_catchup=max_catchup)


def test_a_week_down_is_counted_not_listed() -> None:
    plan = plan_ticks(every("1m"), utc(0), utc(0, day=17), catchup="all", max_catchup=10)
    assert len(plan.fire) == 10
    assert plan.fire[-1] == utc(0, day=17)
    assert plan.skipped == 7 * 24 * 60 - 10
    assert (plan.first_skipped, plan.last_skipped) == (utc(0, 1), utc(23, 50, day=16))


# --- DST days: the plan follows the schedule's own policy ---


@pytest.mark.parametrize(
    ("spec", "last", "now", "fire", "next_"),
    [
        # Amsterdam spring: 02:30 does not exist, fires at 03:00 CEST
        (cron("30 2 * * *", "Europe/Amsterdam"), "2026-03-28T02:30+01:00",
         "2026-03-29T03:00:01+02:00", ["2026-03-29T03:00+02:00"], "2026-03-30T02:30+02:00"),
        # New York autumn: 01:30 EDT fired; at 01:31 EST nothing fires again
        (cron("30 1 * * *", "America/New_York"), "2026-11-01T01:30-04:00",
         "2026-11-01T01:31-05:00", [], "2026-11-02T01:30-05:00"),
        # Amsterdam autumn hourly: the second 02:00 (CET) is a real hour, it fires
        (cron("@hourly", "Europe/Amsterdam"), "2026-10-25T02:00+02:00",
         "2026-10-25T02:00:02+01:00", ["2026-10-25T02:00+01:00"], "2026-10-25T03:00+01:00"),
        # New York spring hourly: 01:00 EST then 03:00 EDT, one real hour apart
        (cron("@hourly", "America/New_York"), "2026-03-08T01:00-05:00",
         "2026-03-08T03:00:02-04:00", ["2026-03-08T03:00-04:00"], "2026-03-08T04:00-04:00"),
        # every 15 minutes through the Amsterdam spring gap: 01:45 CET -> 03:00 CEST
        (every("15m"), "2026-03-29T01:45+01:00", "2026-03-29T03:00:01+02:00",
         ["2026-03-29T03:00+02:00"], "2026-03-29T03:15+02:00"),
    ],
    ids=["ams-spring-daily", "nyc-autumn-daily", "ams-autumn-hourly", "nyc-spring-hourly",
         "ams-spring-15m"],
)  # fmt: skip
def test_dst_ticks(spec: TimeTrigger, last: str, now: str, fire: list[str], next_: str) -> None:
    plan = plan_ticks(spec, at(last), at(now))
    assert plan.fire == tuple(at(f) for f in fire)
    assert plan.next == at(next_)
    assert plan.skipped == 0


@pytest.mark.parametrize(
    ("spec", "day"),
    [
        (cron("30 2 * * *", "Europe/Amsterdam"), "2026-03-29"),
        (cron("30 1 * * *", "America/New_York"), "2026-11-01"),
        (cron("@hourly", "Europe/Amsterdam"), "2026-10-25"),
        (cron("@hourly", "America/New_York"), "2026-03-08"),
        (cron("*/15 * * * *", "America/New_York"), "2026-11-01"),
        (every("15m"), "2026-03-29"),
    ],
    ids=["ams-daily", "nyc-daily-0130", "ams-hourly", "nyc-hourly", "nyc-15m", "every-15m"],
)
def test_a_tick_loop_fires_each_instant_exactly_once(spec: TimeTrigger, day: str) -> None:
    """Drive plan_ticks like the service: wake 2 s late at plan.next, keep the cursor."""
    start = at(f"{day}T00:00+00:00") - timedelta(hours=6)
    end = start + timedelta(hours=36)
    expected = list(takewhile(lambda t: t <= end, fire_times(spec, start)))
    fired: list[datetime] = []
    cursor: datetime | None = start
    now = start
    for _ in range(1000):
        plan = plan_ticks(spec, cursor, now)
        assert plan.skipped == 0
        fired.extend(plan.fire)
        cursor = plan.cursor
        if plan.next is None or plan.next > end:
            break
        now = plan.next + timedelta(seconds=2)
    assert fired == expected
    assert len(set(fired)) == len(fired)


@pytest.mark.parametrize("policy", list(CatchUp))
def test_restart_resumes_from_the_stored_cursor(policy: CatchUp) -> None:
    """Down 10:00:30-13:20; after the restart nothing fired before comes back, and planning
    twice with the same stored cursor (a crash before anything new was stored) is the same."""
    before = plan_ticks(HOURLY, utc(9), utc(10, 0, 2), catchup=policy)
    assert before.fire == (utc(10),)
    after = plan_ticks(HOURLY, before.cursor, utc(13, 20), catchup=policy)
    again = plan_ticks(HOURLY, before.cursor, utc(13, 20, 1), catchup=policy)
    assert after == again
    fired = {
        "none": (),
        "latest": (utc(13),),
        "all": (utc(11), utc(12), utc(13)),
    }[policy]
    assert after.fire == fired
    assert after.skipped == 3 - len(fired)
    assert after.cursor == utc(13)
    assert plan_ticks(HOURLY, after.cursor, utc(13, 21), catchup=policy) == Plan(
        cursor=utc(13), next=utc(14)
    )


# --- validation ---


@pytest.mark.parametrize(
    ("catchup", "max_catchup", "problems"),
    [
        ("latest", 100, []),
        (CatchUp.ALL, 1, []),
        ("some", 100, ["catchup must be one of 'none', 'latest', 'all', not 'some'"]),
        ("all", 0, ["max_catchup must be a whole number >= 1, not 0"]),
        ("all", True, ["max_catchup must be a whole number >= 1, not True"]),
        (None, "5", [
            "catchup must be one of 'none', 'latest', 'all', not None",
            "max_catchup must be a whole number >= 1, not '5'",
        ]),
    ],
)  # fmt: skip
def test_catchup_problems(catchup: object, max_catchup: object, problems: list[str]) -> None:
    assert catchup_problems(catchup, max_catchup) == problems


def test_plan_ticks_refuses_bad_options_and_naive_times() -> None:
    with pytest.raises(ScheduleError, match="catchup must be one of"):
        plan_ticks(HOURLY, utc(9), utc(10), catchup="sometimes")
    with pytest.raises(ScheduleError, match="max_catchup must be a whole number"):
        plan_ticks(HOURLY, utc(9), utc(10), catchup="all", max_catchup=0)
    with pytest.raises(ScheduleError, match="grace must be positive"):
        plan_ticks(HOURLY, utc(9), utc(10), grace=timedelta(0))
    with pytest.raises(ValueError, match="now must be an aware datetime"):
        plan_ticks(HOURLY, utc(9), datetime(2026, 1, 10, 10))  # noqa: DTZ001
    with pytest.raises(ValueError, match="last must be an aware datetime"):
        plan_ticks(HOURLY, datetime(2026, 1, 10, 9), utc(10))  # noqa: DTZ001
    with pytest.raises(ScheduleError, match="unknown time zone 'Nowhere'"):
        plan_ticks(cron("@daily", tz="Nowhere"), utc(9), utc(10))


def test_default_grace_is_a_minute() -> None:
    assert timedelta(minutes=1) == DEFAULT_GRACE


# --- next_fire, preview, instants_between ---


def test_next_fire_and_preview() -> None:
    spec = cron("30 2 * * *", "Europe/Amsterdam")
    now = at("2026-03-28T12:00+01:00")
    assert next_fire(spec, now) == at("2026-03-29T03:00+02:00")
    assert preview(spec, now, 3) == [
        at("2026-03-29T03:00+02:00"),
        at("2026-03-30T02:30+02:00"),
        at("2026-03-31T02:30+02:00"),
    ]
    assert preview(spec, now, 0) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        preview(spec, now, -1)


def test_next_fire_is_strictly_after_now() -> None:
    assert next_fire(HOURLY, utc(10)) == utc(11)
    assert next_fire(every("1h", start=utc(10)), utc(10)) == utc(11)
    assert next_fire(every("1h", start=utc(10)), utc(3)) == utc(10)


def test_instants_between_is_half_open() -> None:
    assert list(instants_between(HOURLY, utc(8), utc(11))) == [utc(8), utc(9), utc(10)]
    assert list(instants_between(HOURLY, utc(8, 0, 0.5), utc(10, 0, 0.5))) == [utc(9), utc(10)]
    assert list(instants_between(HOURLY, utc(11), utc(8))) == []
    daily = cron("@daily", "America/New_York")
    january = list(
        instants_between(daily, at("2026-01-01T00:00-05:00"), at("2026-02-01T00:00-05:00"))
    )
    assert len(january) == 31
    assert january[0] == at("2026-01-01T00:00-05:00")
