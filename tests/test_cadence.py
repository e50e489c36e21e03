"""The cadence's dates (``CadenceRule.due``): cases reasoned out by hand, with the dates written out,
then properties across daylight-saving changes, month ends and the ends of the timestamp range,
checked against an oracle that finds local times differently from the code (it tries the offsets
in force around a wall-clock time and keeps the ones that convert back to it)."""

from __future__ import annotations

import calendar
import contextlib
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.model import CadenceRule

LONDON, NEW_YORK, LORD_HOWE = (ZoneInfo(name) for name in
                                ("Europe/London", "America/New_York", "Australia/Lord_Howe"))
ZONES = {"Europe/London": LONDON, "America/New_York": NEW_YORK, "Australia/Lord_Howe": LORD_HOWE}


def rule(**form) -> CadenceRule:
    return CadenceRule(id="cadence", field="dueDate", **form)


def z(*parts: int) -> datetime:
    """A UTC instant, written out."""
    return datetime(*parts, tzinfo=UTC)


# -- cases worked out by hand ------------------------------------------------------------------------
# 2026: London's clocks go forward at 01:00 GMT on Sunday 29 March and back at 02:00 BST on Sunday
# 25 October; New York's at 02:00 on 8 March and 1 November; Lord Howe's (30 minutes) back at 02:00
# on 5 April and forward at 02:00 (+10:30) on 4 October.

@pytest.mark.parametrize(("form", "base", "weeks"), [
    # Monday 09:00 GMT, then Mondays 09:00 BST: an hour earlier in UTC.
    ({"unit": "weeks", "count": 1, "timezone": "Europe/London"}, z(2026, 3, 23, 9),
     [z(2026, 3, 30, 8), z(2026, 4, 6, 8)]),
    # Monday 09:00 BST, then 09:00 GMT: an hour later in UTC.
    ({"unit": "weeks", "count": 1, "timezone": "Europe/London"}, z(2026, 10, 19, 8),
     [z(2026, 10, 26, 9), z(2026, 11, 2, 9)]),
    # Every other Monday 09:00 in New York: EST (UTC-5), then EDT (UTC-4).
    ({"unit": "weeks", "count": 2, "timezone": "America/New_York"}, z(2026, 3, 2, 14),
     [z(2026, 3, 16, 13), z(2026, 3, 30, 13)]),
    # 01:30 on 29 March does not exist in London: read as GMT, it is 01:30 UTC (02:30 BST).
    ({"unit": "days", "count": 1, "timezone": "Europe/London"}, z(2026, 3, 28, 1, 30),
     [z(2026, 3, 29, 1, 30), z(2026, 3, 30, 0, 30)]),
    # 01:30 on 25 October happens twice in London: the first, BST, is 00:30 UTC.
    ({"unit": "days", "count": 1, "timezone": "Europe/London"}, z(2026, 10, 24, 0, 30),
     [z(2026, 10, 25, 0, 30), z(2026, 10, 26, 1, 30)]),
    # A base at the second 01:30 (GMT) of 26 October 2025: 52 weeks on is 25 October 2026 01:30,
    # again twice, and the week takes the first.
    ({"unit": "weeks", "count": 52, "timezone": "Europe/London"}, z(2025, 10, 26, 1, 30),
     [z(2026, 10, 25, 0, 30)]),
    # The same by months: 72 months on is Sunday 26 October 2031, the last Sunday of that October.
    ({"unit": "months", "count": 72, "timezone": "Europe/London"}, z(2025, 10, 26, 1, 30),
     [z(2031, 10, 26, 0, 30)]),
    # Lord Howe, 02:15 at +10:30 on Sunday 27 September 2026; on 4 October 02:15 is inside the
    # 30-minute gap, read at +10:30 (02:45 +11:00); on 11 October 02:15 is at +11:00.
    ({"unit": "weeks", "count": 1, "timezone": "Australia/Lord_Howe"}, z(2026, 9, 26, 15, 45),
     [z(2026, 10, 3, 15, 45), z(2026, 10, 10, 15, 15)]),
    # Lord Howe, 01:45 on 5 April 2026 happens twice (+11:00, then +10:30): the first.
    ({"unit": "days", "count": 7, "timezone": "Australia/Lord_Howe"}, z(2026, 3, 28, 14, 45),
     [z(2026, 4, 4, 14, 45), z(2026, 4, 11, 15, 15)]),
    # Months are counted from the base and clamped: 31 January, 29 February (2024 is a leap year),
    # 31 March, 30 April; never 29 March after a 29 February.
    ({"unit": "months", "count": 1}, z(2024, 1, 31, 9, 0, 0, 5),
     [z(2024, 2, 29, 9, 0, 0, 5), z(2024, 3, 31, 9, 0, 0, 5), z(2024, 4, 30, 9, 0, 0, 5)]),
    ({"unit": "months", "count": 1}, z(2025, 1, 31, 23, 59),
     [z(2025, 2, 28, 23, 59), z(2025, 3, 31, 23, 59)]),
    ({"unit": "months", "count": 12}, z(2024, 2, 29), [z(2025, 2, 28), z(2026, 2, 28), z(2027, 2, 28),
                                                       z(2028, 2, 29)]),
    # Monthly on the 1st at 09:00 London time: GMT in winter, BST from April.
    ({"unit": "months", "count": 1, "timezone": "Europe/London"}, z(2026, 1, 1, 9),
     [z(2026, 2, 1, 9), z(2026, 3, 1, 9), z(2026, 4, 1, 8)]),
    # On the 31st in London: the clamping is in local time, and the hour follows BST.
    ({"unit": "months", "count": 1, "timezone": "Europe/London"}, z(2026, 1, 31, 9),
     [z(2026, 2, 28, 9), z(2026, 3, 31, 8), z(2026, 4, 30, 8)]),
    # The 1st at 00:30 in New York is the 1st, although it is the 1st at 05:30 (or 04:30) in UTC.
    ({"unit": "months", "count": 1, "timezone": "America/New_York"}, z(2026, 2, 1, 5, 30),
     [z(2026, 3, 1, 5, 30), z(2026, 4, 1, 4, 30)]),
    # Exact days never move the hour in UTC.
    ({"every_days": 7}, z(2026, 3, 23, 9), [z(2026, 3, 30, 9), z(2026, 4, 6, 9)]),
    ({"every_days": 1}, z(2026, 3, 28, 1, 30), [z(2026, 3, 29, 1, 30), z(2026, 3, 30, 1, 30)]),
])
def test_due_dates_worked_out_by_hand(form, base, weeks):
    cadence = rule(**form)
    assert [cadence.due(base, week) for week in range(1, len(weeks) + 2)] == [base, *weeks]


@pytest.mark.parametrize(("form", "base", "week"), [
    ({"every_days": 7}, z(9999, 12, 25), 2),
    ({"every_days": 3660}, z(2025, 1, 1), 10**6),
    ({"unit": "days", "count": 3660, "timezone": "Europe/London"}, z(2025, 1, 1), 10**6),
    ({"unit": "months", "count": 1}, z(9999, 12, 1), 2),
    ({"unit": "months", "count": 120, "timezone": "Europe/London"}, z(2025, 1, 1), 10**6),
    ({"unit": "weeks", "count": 1, "timezone": "Europe/London"}, z(9999, 12, 25), 2),
    # 23:00 on 31 December 9999 in New York is 04:00 UTC on 1 January 10000.
    ({"unit": "days", "count": 1, "timezone": "America/New_York"}, z(9999, 12, 31, 4), 2),
    # The base's local time, 1 January 10000 at +11:00, is past the range: no later week has a date.
    ({"unit": "months", "count": 1, "timezone": "Australia/Lord_Howe"}, z(9999, 12, 31, 13), 2),
    # At the other end: 0001-01-01 02:00 UTC is still year 0 in New York (UTC-4:56 then).
    ({"unit": "weeks", "count": 1, "timezone": "America/New_York"}, z(1, 1, 1, 2), 2),
])
def test_a_date_a_timestamp_cannot_hold_is_none(form, base, week):
    cadence = rule(**form)
    assert cadence.due(base, week) is None
    assert cadence.due(base, 1) == base


def test_the_last_dates_a_timestamp_can_hold_are_given():
    last = datetime.max.replace(tzinfo=UTC)
    assert rule(unit="days", count=1).due(last - timedelta(days=1), 2) == last
    # 18:59:59.999999 in New York on 31 December 9999 is the last instant, in EST.
    assert rule(unit="days", count=1, timezone="America/New_York").due(last - timedelta(days=1), 2) == last
    assert rule(unit="months", count=1).due(z(9999, 11, 30, 23, 59, 59, 999999), 2) == z(9999, 12, 30, 23,
                                                                                         59, 59, 999999)


@pytest.mark.parametrize(("form", "words"), [
    ({"every_days": 7}, "every 7 days"),
    ({"every_days": 1}, "every day"),
    ({"unit": "days", "count": 1}, "every day in UTC"),
    ({"unit": "weeks", "count": 1, "timezone": "Europe/London"},
     "every week at local time in Europe/London"),
    ({"unit": "weeks", "count": 2, "timezone": "Europe/London"},
     "every 2 weeks at local time in Europe/London"),
    ({"unit": "months", "count": 1}, "every month in UTC"),
    ({"unit": "months", "count": 3, "timezone": "Asia/Tokyo"},
     "every 3 months at local time in Asia/Tokyo"),
])
def test_a_cadence_describes_itself(form, words):
    assert rule(**form).describe() == words


@pytest.mark.parametrize("form", [
    {}, {"every_days": 7, "unit": "weeks", "count": 1}, {"unit": "fortnights", "count": 1},
    {"every_days": 7, "timezone": "Europe/London"},
])
def test_a_cadence_has_exactly_one_form(form):
    with pytest.raises(ValueError):
        rule(**form)


# -- the oracle ----------------------------------------------------------------------------------------

EPOCH = datetime(1, 1, 1)
MICRO = timedelta(microseconds=1)
LAST = (datetime.max - EPOCH) // MICRO  # microseconds from EPOCH to the last instant a timestamp holds


def micros(value: datetime | timedelta) -> int:
    if isinstance(value, timedelta):
        return value // MICRO
    return (value.replace(tzinfo=None) - EPOCH) // MICRO


def instant(us: int) -> datetime:
    return (EPOCH + timedelta(microseconds=us)).replace(tzinfo=UTC)


def wall(us: int, zone) -> datetime | None:
    """The wall-clock time (naive) of an instant in ``zone``; None when it is not representable."""
    try:
        return instant(us).astimezone(zone).replace(tzinfo=None)
    except (OverflowError, ValueError):
        return None


def offsets_around(naive: datetime, zone) -> list[timedelta]:
    """The offsets in force a day before and a day after ``naive`` (where those days exist):
    no zone here changes its offset twice within two days."""
    found = []
    for days in (-1, 1):
        with contextlib.suppress(OverflowError):
            found.append(zone.utcoffset(naive + timedelta(days=days)))
    return found


def named_instant(naive: datetime, zone) -> int:
    """Microseconds from EPOCH (UTC) of the instant the wall-clock time ``naive`` names in ``zone``,
    by the documented rule: the earlier when it occurs twice; in a gap, read with the offset in
    force before the change. May lie outside 0..LAST."""
    offsets = offsets_around(naive, zone)
    candidates = sorted({micros(naive) - micros(offset) for offset in offsets})
    if len(candidates) == 1:
        return candidates[0]
    real = [us for us in candidates if 0 <= us <= LAST and wall(us, zone) == naive]
    return real[0] if real else micros(naive) - micros(offsets[0])


def in_gap(naive: datetime, zone) -> bool:
    return not any(wall(micros(naive) - micros(offset), zone) == naive
                   for offset in offsets_around(naive, zone))


def months_later(day: date, months: int) -> date | None:
    """``day`` moved by ``months`` calendar months, on its day or the month's last; None past 9999."""
    year, month = divmod(day.year * 12 + day.month - 1 + months, 12)
    if not 1 <= year <= 9999:
        return None
    length = calendar.monthrange(year, month + 1)[1]  # December 9999 has no following month to subtract
    return date(year, month + 1, min(day.day, length))


def days_later(day: date, days: int) -> date | None:
    ordinal = day.toordinal() + days
    return date.fromordinal(ordinal) if 1 <= ordinal <= date.max.toordinal() else None


def expected_due(cadence: CadenceRule, base: datetime, week: int) -> datetime | None:
    """What ``due`` must give, computed from wall-clock dates and the oracle, not from the code."""
    if week == 1:
        return base
    if cadence.every_days is not None:
        us = micros(base) + (week - 1) * cadence.every_days * micros(timedelta(days=1))
        return instant(us) if us <= LAST else None
    zone = ZONES.get(cadence.timezone or "", UTC)
    local = wall(micros(base), zone)
    if local is None:  # the base's own local time is past the range: no later week has a date
        return None
    steps = (week - 1) * cadence.count
    day = (months_later(local.date(), steps) if cadence.unit == "months"
           else days_later(local.date(), steps * (7 if cadence.unit == "weeks" else 1)))
    if day is None:
        return None
    us = named_instant(datetime.combine(day, local.time()), zone)
    return instant(us) if 0 <= us <= LAST else None


# -- strategies -------------------------------------------------------------------------------------


def transitions(zone, start: int = 2024, end: int = 2028) -> list[datetime]:
    """The instants ``zone`` changes its offset, found by looking at every hour, then every minute."""
    found = []
    hour = datetime(start, 1, 1, tzinfo=UTC)
    while hour.year < end:
        following = hour + timedelta(hours=1)
        if hour.astimezone(zone).utcoffset() != following.astimezone(zone).utcoffset():
            minute = hour
            while minute.astimezone(zone).utcoffset() == hour.astimezone(zone).utcoffset():
                minute += timedelta(minutes=1)
            found.append(minute)
        hour = following
    return found


TRANSITIONS = {name: transitions(zone) for name, zone in ZONES.items()}


@st.composite
def near_a_change(draw):
    """A daily or weekly cadence in one of ZONES and a base some steps before a clock change, at a
    wall-clock time up to 90 minutes either side of it: later weeks fall in gaps and folds."""
    name = draw(st.sampled_from(sorted(ZONES)))
    zone = ZONES[name]
    change = draw(st.sampled_from(TRANSITIONS[name])).astimezone(zone).replace(tzinfo=None)
    unit = draw(st.sampled_from(["days", "weeks"]))
    count = draw(st.integers(1, 3))
    span = count * (7 if unit == "weeks" else 1)
    before = draw(st.integers(0, 12))
    at = change + timedelta(minutes=draw(st.integers(-90, 90)), microseconds=draw(st.integers(0, 999_999)))
    base = instant(named_instant(at - timedelta(days=span * before), zone))
    return rule(unit=unit, count=count, timezone=name), base, before + 1 + draw(st.integers(0, 3))


def forms():
    zones = st.sampled_from([None, *sorted(ZONES)])
    return st.one_of(
        st.builds(lambda n: rule(every_days=n), st.integers(1, 3660)),
        st.builds(lambda unit, n, zone: rule(unit=unit, count=n, timezone=zone),
                  st.sampled_from(["days", "weeks", "months"]), st.integers(1, 40), zones))


anywhere = st.integers(0, LAST).map(instant)
near_the_ends = st.one_of(st.integers(LAST - micros(timedelta(days=3 * 366)), LAST),
                          st.integers(0, micros(timedelta(days=2)))).map(instant)


@st.composite
def month_ends(draw, zone):
    """A base on the 1st or near a month's end, often at night (when clocks change), sometimes an
    hour or half an hour after the first of two equal wall-clock times (so at the second)."""
    year, month = draw(st.integers(1971, 2090)), draw(st.integers(1, 12))
    last = ((date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)) - timedelta(days=1)).day
    day = min(draw(st.sampled_from([1, 28, 29, 30, 31])), last)
    hour = draw(st.one_of(st.integers(0, 3), st.integers(0, 23)))
    naive = datetime(year, month, day, hour, draw(st.sampled_from([0, 15, 30, 45])),
                     draw(st.integers(0, 59)), draw(st.integers(0, 999_999)))
    later = draw(st.sampled_from([0, 0, 30, 60]))
    return instant(named_instant(naive, zone) + micros(timedelta(minutes=later)))


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- properties -------------------------------------------------------------------------------------


@PROPERTY
@given(near_a_change())
def test_days_and_weeks_keep_the_local_time_of_day_across_clock_changes(case):
    cadence, base, weeks = case
    zone = ZONES[cadence.timezone]
    span = cadence.count * (7 if cadence.unit == "weeks" else 1)
    local = base.astimezone(zone).replace(tzinfo=None)
    previous = local.date()
    for week in range(2, weeks + 1):
        due = cadence.due(base, week)
        assert due == expected_due(cadence, base, week)
        shown = due.astimezone(zone).replace(tzinfo=None)
        meant = datetime.combine(local.date() + timedelta(days=span * (week - 1)), local.time())
        if in_gap(meant, zone):
            # Read with the offset from before the change: as much later as the clocks jumped.
            jump = zone.utcoffset(meant + timedelta(days=1)) - zone.utcoffset(meant - timedelta(days=1))
            assert timedelta(0) < jump <= timedelta(hours=1) and shown == meant + jump
        else:
            assert shown == meant
            assert due.astimezone(zone).fold == 0  # the first occurrence when there are two
        assert (shown.date() - previous).days == span
        previous = shown.date()


@PROPERTY
@given(st.data(), st.sampled_from([None, *sorted(ZONES)]), st.integers(1, 25), st.integers(1, 60))
def test_months_keep_the_base_day_or_the_month_s_last_counted_from_the_base(data, name, count, week):
    cadence = rule(unit="months", count=count, timezone=name)
    zone = ZONES.get(name or "", UTC)
    base = data.draw(month_ends(zone))
    local = base.astimezone(zone)
    due = cadence.due(base, week)
    assert due == expected_due(cadence, base, week)
    shown = due.astimezone(zone)
    year, month = divmod(local.year * 12 + local.month - 1 + count * (week - 1), 12)
    assert (shown.year, shown.month) == (year, month + 1)
    last_day = ((date(year + 1, 1, 1) if month == 11 else date(year, month + 2, 1)) - timedelta(days=1)).day
    assert shown.day == min(local.day, last_day)
    if not in_gap(datetime.combine(shown.date(), local.time()), zone):
        assert shown.time() == local.time()


@PROPERTY
@given(forms(), anywhere)
def test_week_one_is_the_base_itself(cadence, base):
    assert cadence.due(base, 1) == base


@PROPERTY
@given(forms(), st.one_of(near_the_ends, anywhere), st.one_of(st.integers(1, 200), st.integers(1, 10**6)))
def test_due_is_none_exactly_when_the_date_is_out_of_range(cadence, base, week):
    assert cadence.due(base, week) == expected_due(cadence, base, week)


@PROPERTY
@given(forms(), st.one_of(near_the_ends, anywhere), st.integers(1, 600))
def test_dates_rise_with_the_week_and_none_is_never_followed_by_a_date(cadence, base, week):
    """The kernel checks only a series' last week against the range: that needs this."""
    this, following = cadence.due(base, week), cadence.due(base, week + 1)
    assert following is None or (this is not None and following > this)


@PROPERTY
@given(st.one_of(st.tuples(st.just("days"), st.integers(1, 3660)),
                 st.tuples(st.just("weeks"), st.integers(1, 520))),
       st.one_of(near_the_ends, anywhere), st.integers(1, 10**5))
def test_calendar_days_in_utc_are_exact_days(step, base, week):
    unit, n = step
    exact = rule(every_days=n * (7 if unit == "weeks" else 1))
    assert rule(unit=unit, count=n).due(base, week) == exact.due(base, week)
