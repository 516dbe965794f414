"""Calendar windows: which hour, day, ISO week or month an instant falls in, in a budget's timezone.

Windows are computed in the budget's IANA timezone (weeks start on Monday) and
returned as aware UTC datetimes, so a day in Europe/Paris across a DST change is
23 or 25 hours long, as a person there would expect. `total` is one window from the
epoch that never resets.

A rolling window (`Rolling`, "30m", "5h", "7d") counts the spend of the last N minutes. Its running
totals are kept in buckets (a minute long for windows up to a day, an hour beyond), and a bucket counts
until the whole of it has left the window: a charge may count up to one bucket longer than N, never
shorter, so the rounding never lets an agent spend more than the exact window would.
"""

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from budget_mcp.errors import InvalidInputError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Period(StrEnum):
    """How often a limit resets."""

    TOTAL = "total"
    HOURLY = "hourly"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class Rolling(str):
    """A rolling window of `minutes` (1 minute to 90 days), as canonical text: "300m" is "5h", "1440m" is "1d"."""

    minutes: int

    def __new__(cls, minutes: int) -> "Rolling":
        if minutes % 1440 == 0:
            text = f"{minutes // 1440}d"
        elif minutes % 60 == 0:
            text = f"{minutes // 60}h"
        else:
            text = f"{minutes}m"
        made = super().__new__(cls, text)
        made.minutes = minutes
        return made

    @property
    def value(self) -> str:
        return str(self)

    @property
    def seconds(self) -> int:
        return self.minutes * 60

    @property
    def bucket_seconds(self) -> int:
        """How long one bucket of its running totals is."""
        return 60 if self.minutes <= 1440 else 3600

    def bucket(self, at: datetime) -> int:
        """The start (Unix seconds) of the bucket holding `at`: the key its running total is stored under."""
        size = self.bucket_seconds
        return int((at - EPOCH) // timedelta(seconds=1)) // size * size

    def first_bucket(self, at: datetime) -> int:
        """The start of the oldest bucket still counted at `at`: the first whose end is after `at` - N."""
        size = self.bucket_seconds
        earliest = int((at - EPOCH) // timedelta(seconds=1)) - self.seconds - size + 1  # start > floor(at) - N - size
        return -(-earliest // size) * size

    def drops_out(self, start: int) -> datetime:
        """When the bucket starting at `start` has wholly left the window."""
        return EPOCH + timedelta(seconds=start + self.bucket_seconds + self.seconds)


AnyPeriod = Period | Rolling
MAX_ROLLING_MINUTES = 90 * 1440
_ROLLING = re.compile(r"([0-9]{1,7})([mhd])")
_UNIT_MINUTES = {"m": 1, "h": 60, "d": 1440}
PERIOD_FORMS = (
    "one of 'total', 'hourly', 'daily', 'weekly', 'monthly', or a rolling window of whole minutes, hours or days "
    "from '1m' to '90d' (e.g. '30m', '5h', '7d')"
)


def parse_period(value: object, field: str = "period") -> AnyPeriod:
    """A calendar period or a rolling window from its text, or InvalidInputError naming the valid forms."""
    if isinstance(value, Period | Rolling):
        return value
    if isinstance(value, str):
        if value in _PERIOD_VALUES:
            return Period(value)
        found = _ROLLING.fullmatch(value)
        if found:
            minutes = int(found[1]) * _UNIT_MINUTES[found[2]]
            if 1 <= minutes <= MAX_ROLLING_MINUTES:
                return Rolling(minutes)
    shown = value[:40] if isinstance(value, str) else type(value).__name__
    raise InvalidInputError(f"{field} {shown!r} is not a period; use {PERIOD_FORMS}")


_PERIOD_VALUES = frozenset(p.value for p in Period)


_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
MAX_ZONE_NAME = 64


def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name, or InvalidInputError."""
    if isinstance(name, str) and len(name) <= MAX_ZONE_NAME and _ZONE_NAME.fullmatch(name):
        try:
            return _zone(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # a tzdata directory such as 'Europe' is an OSError
            pass
    shown = name[:60] if isinstance(name, str) else type(name).__name__
    raise InvalidInputError(f"timezone {shown!r} is not an IANA timezone name; use e.g. 'UTC' or 'Europe/Paris'")


@functools.lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


_recent: dict[tuple[Period, str], tuple[datetime, datetime]] = {}


def window(period: AnyPeriod, tz: str, at: datetime) -> tuple[datetime, datetime | None]:
    """The [start, end) of the window holding `at`, as aware UTC datetimes; end is None for `total`.

    For a rolling window: from the start of its oldest counted bucket to `at`.
    """
    if isinstance(period, Rolling):
        return EPOCH + timedelta(seconds=period.first_bucket(at)), at
    if period is Period.TOTAL:
        return EPOCH, None
    # Nearly every call asks about the current window again: reuse the last one computed when it still holds `at`.
    known = _recent.get((period, tz))
    if known is not None and known[0] <= at < known[1]:
        return known
    bounds = _compute(period, tz, at)
    _recent[(period, tz)] = bounds
    return bounds


def _compute(period: Period, tz: str, at: datetime) -> tuple[datetime, datetime]:
    tzinfo = zone(tz)
    if period is Period.HOURLY:
        return _local_hour(tzinfo, at)
    local = at.astimezone(tzinfo)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if period is Period.DAILY:
        start, end = day, day + timedelta(days=1)
    elif period is Period.WEEKLY:
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.replace(tzinfo=tzinfo).astimezone(UTC), end.replace(tzinfo=tzinfo).astimezone(UTC)


def _local_hour(tzinfo: ZoneInfo, at: datetime) -> tuple[datetime, datetime]:
    """The local clock hour holding `at`. A change of UTC offset also starts a window, so where a zone shifts by
    half an hour (Australia/Lord_Howe) the hour it repeats or skips is a half-hour window of its own."""
    local = at.astimezone(tzinfo)
    start = at - timedelta(minutes=local.minute, seconds=local.second, microseconds=local.microsecond)
    end = start + timedelta(hours=1)
    if _offset(tzinfo, start) != local.utcoffset():
        start = _offset_change(tzinfo, start, at)
    if _offset(tzinfo, end - timedelta(microseconds=1)) != local.utcoffset():
        end = _offset_change(tzinfo, at, end)
    return start.astimezone(UTC), end.astimezone(UTC)


def _offset(tzinfo: ZoneInfo, at: datetime) -> timedelta | None:
    return at.astimezone(tzinfo).utcoffset()


def _offset_change(tzinfo: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first second in (before, after] with the offset `after` has (zones change at most once an hour)."""
    low, high = int(before.timestamp()), int(after.timestamp())
    wanted = _offset(tzinfo, datetime.fromtimestamp(high, UTC))
    while high - low > 1:
        middle = (low + high) // 2
        if _offset(tzinfo, datetime.fromtimestamp(middle, UTC)) == wanted:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def window_key(period: Period, tz: str, at: datetime) -> int:
    """The window's start as whole Unix seconds: the key running totals are stored under."""
    return int(window(period, tz, at)[0].timestamp())


_current: dict[str, tuple[datetime, datetime, dict[Period, int]]] = {}


def window_keys(tz: str, at: datetime) -> Mapping[Period, int]:
    """The window key of every period at `at` in `tz` (snapshots ask for all of them, again and again)."""
    known = _current.get(tz)
    if known is not None and known[0] <= at < known[1]:
        return known[2]
    bounds = {period: window(period, tz, at) for period in Period}
    keys = {period: int(start.timestamp()) for period, (start, _) in bounds.items()}
    starts = [start for period, (start, _) in bounds.items() if period is not Period.TOTAL]
    ends = [end for _, (_, end) in bounds.items() if end is not None]
    _current[tz] = (max(starts), min(ends), keys)
    return keys
