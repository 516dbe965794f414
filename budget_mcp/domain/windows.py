"""Calendar windows: which hour, day, ISO week or month an instant falls in, in a budget's timezone.

Windows are computed in the budget's IANA timezone (weeks start on Monday) and
returned as aware UTC datetimes, so a day in Europe/Paris across a DST change is
23 or 25 hours long, as a person there would expect. `total` is one window from the
epoch that never resets.
"""

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


def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name, or InvalidInputError."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"timezone {name[:60]!r} is not an IANA timezone name; use e.g. 'UTC' or 'Europe/Paris'"
        ) from None


_recent: dict[tuple[Period, str], tuple[datetime, datetime]] = {}


def window(period: Period, tz: str, at: datetime) -> tuple[datetime, datetime | None]:
    """The [start, end) of the window holding `at`, as aware UTC datetimes; end is None for `total`."""
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
    local = at.astimezone(zone(tz))
    if period is Period.HOURLY:
        # Truncating the aware local time keeps its DST fold, so a repeated local hour maps to the right UTC hour.
        start_utc = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return start_utc, start_utc + timedelta(hours=1)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if period is Period.DAILY:
        start, end = day, day + timedelta(days=1)
    elif period is Period.WEEKLY:
        start = day - timedelta(days=day.weekday())
        end = start + timedelta(days=7)
    else:
        start = day.replace(day=1)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    tzinfo = zone(tz)
    return start.replace(tzinfo=tzinfo).astimezone(UTC), end.replace(tzinfo=tzinfo).astimezone(UTC)


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
