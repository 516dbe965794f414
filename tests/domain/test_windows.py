from datetime import UTC, datetime, timedelta

import pytest

from budget_mcp.domain.windows import EPOCH, Period, window, window_keys
from budget_mcp.errors import InvalidInputError


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "tz", "at", "start", "end"),
    [
        (Period.HOURLY, "UTC", utc(2026, 11, 25, 12, 59, 59), utc(2026, 11, 25, 12), utc(2026, 11, 25, 13)),
        (Period.DAILY, "UTC", utc(2026, 11, 25, 23, 59), utc(2026, 11, 25), utc(2026, 11, 26)),
        (Period.DAILY, "UTC", utc(2026, 11, 26, 0, 0), utc(2026, 11, 26), utc(2026, 11, 27)),
        # 2026-11-25 is a Wednesday: the ISO week starts Monday the 23rd.
        (Period.WEEKLY, "UTC", utc(2026, 11, 25, 8), utc(2026, 11, 23), utc(2026, 11, 30)),
        (Period.WEEKLY, "UTC", utc(2026, 11, 29, 23, 59), utc(2026, 11, 23), utc(2026, 11, 30)),
        (Period.WEEKLY, "UTC", utc(2026, 11, 30, 0, 0), utc(2026, 11, 30), utc(2026, 12, 7)),
        (Period.MONTHLY, "UTC", utc(2026, 2, 28, 23), utc(2026, 2, 1), utc(2026, 3, 1)),
        (Period.MONTHLY, "UTC", utc(2026, 12, 31, 23, 59), utc(2026, 12, 1), utc(2027, 1, 1)),
        # New York is UTC-5 in November: its day starts at 05:00 UTC.
        (Period.DAILY, "America/New_York", utc(2026, 11, 26, 3), utc(2026, 11, 25, 5), utc(2026, 11, 26, 5)),
        (Period.MONTHLY, "Asia/Tokyo", utc(2026, 11, 30, 16), utc(2026, 11, 30, 15), utc(2026, 12, 31, 15)),
        # India is UTC+5:30: its hours start at half past in UTC.
        (
            Period.HOURLY,
            "Asia/Kolkata",
            utc(2026, 11, 25, 12, 10),
            utc(2026, 11, 25, 11, 30),
            utc(2026, 11, 25, 12, 30),
        ),
    ],
)
def test_window_bounds(period: Period, tz: str, at: datetime, start: datetime, end: datetime) -> None:
    assert window(period, tz, at) == (start, end)


def test_day_across_spring_forward_is_23_hours_long() -> None:
    # Europe/Paris moves from UTC+1 to UTC+2 on 2026-03-29.
    start, end = window(Period.DAILY, "Europe/Paris", utc(2026, 3, 29, 12))
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert end is not None and (end - start).total_seconds() == 23 * 3600


def test_day_across_fall_back_is_25_hours_long() -> None:
    start, end = window(Period.DAILY, "Europe/Paris", utc(2026, 10, 25, 12))
    assert end is not None and (end - start).total_seconds() == 25 * 3600


def test_repeated_local_hour_at_fall_back_maps_to_distinct_utc_hours() -> None:
    first = window(Period.HOURLY, "Europe/Paris", utc(2026, 10, 25, 0, 30))
    second = window(Period.HOURLY, "Europe/Paris", utc(2026, 10, 25, 1, 30))
    assert first == (utc(2026, 10, 25, 0), utc(2026, 10, 25, 1))
    assert second == (utc(2026, 10, 25, 1), utc(2026, 10, 25, 2))


def test_total_window_never_resets() -> None:
    assert window(Period.TOTAL, "UTC", utc(2026, 11, 25)) == (EPOCH, None)


def test_unknown_timezone_is_refused_with_an_example() -> None:
    with pytest.raises(InvalidInputError, match="IANA timezone name; use e.g. 'UTC'"):
        window(Period.DAILY, "Mars/Olympus", utc(2026, 11, 25))


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "Asia/Kolkata"])
def test_window_keys_follow_every_boundary_they_are_asked_across(tz: str) -> None:
    # Minutes around a month end, a midnight and an hour change, asked in order and then backwards.
    moments = [datetime(2026, 10, 31, 22, 0, tzinfo=UTC) + timedelta(minutes=m) for m in range(0, 240, 7)]
    for at in moments + moments[::-1]:
        assert window_keys(tz, at) == {p: int(window(p, tz, at)[0].timestamp()) for p in Period}
