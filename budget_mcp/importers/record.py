"""What every source format is read into: records of spend, the limits found, and the rejected ones.

A reader turns its format into `SourceRecord`s (one spend record each, keyed by its source id or a digest)
or `Invalid`s (where and why), and names the budgets whose limits it found (`SourceBudget`). Readers do no
I/O beyond reading their source, and know nothing of the ledger: `importers.run` does the rest.
"""

import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any, Protocol

from budget_mcp.domain.money import parse_tokens, parse_usd
from budget_mcp.domain.records import TokenCounts
from budget_mcp.errors import InvalidInputError


@dataclass(slots=True)  # not frozen: a frozen dataclass is slow to build, and an import builds millions
class SourceRecord:
    """One record of spend: at `at` (aware UTC), on `budget_id`, costing `cost_usd` (None: price the tokens)."""

    where: str
    key: str
    budget_id: str
    at: datetime
    cost_usd: Decimal | None
    tokens: TokenCounts = TokenCounts()
    model: str | None = None
    provider: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid:
    """A record that cannot be imported: where it is and why."""

    where: str
    reason: str


@dataclass(frozen=True)
class SourceBudget:
    """Limits a source sets on one budget; they become limits only when the import creates the budget."""

    budget_id: str
    period: str = "total"
    limit_usd: Decimal | None = None
    limit_tokens: int | None = None
    extra_limits: tuple[Mapping[str, Any], ...] = ()
    per_call_usd: Decimal | None = None
    enforcement: str = "block"
    description: str | None = None


def budget_with_limits(
    budget_id: str, by_period: Mapping[str, Mapping[str, Any]], enforcement: str, description: str
) -> SourceBudget:
    """A budget with a source's limits, one per period: the first the source gave is the primary one."""
    first, *others = by_period.values()
    return SourceBudget(
        budget_id, period=first["period"], limit_usd=Decimal(first["limit_usd"]) if "limit_usd" in first else None,
        limit_tokens=first.get("limit_tokens"), extra_limits=tuple(others), enforcement=enforcement,
        description=description,
    )  # fmt: skip


class Source(Protocol):
    """A file, folder or database of one format."""

    format: str

    def budgets(self) -> list[SourceBudget]:
        """The budgets the source sets limits on, under the ids its records map to."""
        ...

    def count(self) -> int:
        """About how many records there are (for the progress bar)."""
        ...

    def records(self) -> Iterator[SourceRecord | Invalid]:
        """Every record, in the source's order; may be called again for a second pass."""
        ...


_NOT_SEGMENT = re.compile(r"[^a-z0-9_-]+")


def segment(name: object, fallback: str = "default") -> str:
    """A name as a valid budget-id segment: lowercased, other characters as '-', at most 64 long."""
    text = _NOT_SEGMENT.sub("-", str(name).strip().lower()).strip("-_")[:64].strip("-_")
    return text or fallback


def digest(*parts: object) -> str:
    """A short stable digest of a record's fields, for sources without ids."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=12).hexdigest()


def utc_time(value: object, field: str, naive_zone: tzinfo = UTC) -> datetime:
    """An ISO-8601 time (or Unix seconds) as aware UTC; a time without an offset is read in `naive_zone`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise InvalidInputError(f"{field} {value!r} is not a Unix time") from None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{field} is missing; give an ISO-8601 time such as 2026-11-02T10:00:00Z")
    try:
        at = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidInputError(f"{field} {value[:40]!r} is not an ISO-8601 time") from None
    return (at.replace(tzinfo=naive_zone) if at.tzinfo is None else at).astimezone(UTC)


def usd(value: object, field: str) -> Decimal:
    """A cost in USD: a number (read by its decimal text) or a decimal string; not negative."""
    if value is None or value == "":
        raise InvalidInputError(f"{field} is missing")
    return parse_usd(value, field)


def tokens(value: object, field: str) -> int:
    """A token count from a number or digits; missing is 0."""
    if value is None or value == "":
        return 0
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    return parse_tokens(value, field)


def text(value: object) -> str | None:
    """An optional name: None for missing or empty."""
    if value is None:
        return None
    shown = str(value).strip()
    return shown[:200] or None
