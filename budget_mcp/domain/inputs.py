"""Reading what callers send into checked domain values, before any lock is taken.

Every function here raises InvalidInputError naming the field and the fix; nothing here does I/O.
`ChargeRequest` and `AllocationRequest` are a charge and an allocation as they were asked for,
checked once, with the budget's path resolved once for the whole operation.
"""

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, TypeVar

from budget_mcp.domain.ids import path_of, validate_budget_id, validate_reservation_id
from budget_mcp.domain.money import parse_tokens, parse_usd, to_nanos
from budget_mcp.domain.records import Enforcement, Limit, TokenCounts
from budget_mcp.domain.windows import AnyPeriod, Period, parse_period, zone
from budget_mcp.errors import InvalidInputError

DEFAULT_TTL_SECONDS = 600
MAX_TTL_SECONDS = 86_400
MAX_METADATA_BYTES = 4_096
MAX_TEXT = 1_000
MAX_NAME = 200  # model names, provider ids, idempotency keys
MAX_THRESHOLDS = 20
MAX_CALLS = 10**12  # far beyond any window's calls, far inside the ledger's integers

E = TypeVar("E", bound=StrEnum)


def choice(kind: type[E], value: object, field: str) -> E:
    """One value of a fixed vocabulary, or an error listing the allowed ones."""
    try:
        return kind(str(value))
    except ValueError:
        allowed = ", ".join(repr(str(v)) for v in kind)
        raise InvalidInputError(f"{field} {str(value)[:40]!r} is unknown; use one of {allowed}") from None


def text(value: object, field: str, *, limit: int = MAX_TEXT) -> str:
    """A non-empty string of at most `limit` characters."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{field} must be a non-empty string")
    if len(value) > limit:
        raise InvalidInputError(f"{field} is {len(value)} characters long; at most {limit} allowed")
    return value


def optional_text(value: object, field: str) -> str | None:
    """`text` of at most 100 characters (an id such as a provider's), or None."""
    return None if value is None else text(value, field, limit=100)


def ttl(seconds: object) -> timedelta:
    """How long a hold lasts: DEFAULT_TTL_SECONDS unless a whole number of seconds up to a day is given."""
    if seconds is None:
        return timedelta(seconds=DEFAULT_TTL_SECONDS)
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_TTL_SECONDS:
        raise InvalidInputError(f"ttl_seconds must be a whole number from 1 to {MAX_TTL_SECONDS}")
    return timedelta(seconds=seconds)


def thresholds(values: Sequence[object]) -> tuple[Decimal, ...]:
    """Alert thresholds: distinct fractions of a limit in (0, 10], at most MAX_THRESHOLDS of them, sorted."""
    if len(values) > MAX_THRESHOLDS:
        raise InvalidInputError(f"alert_at has {len(values)} thresholds; give at most {MAX_THRESHOLDS}")
    parsed = sorted({parse_usd(v, "alert_at") for v in values})
    if not parsed or any(v <= 0 or v > 10 for v in parsed):
        raise InvalidInputError("alert_at takes fractions of a limit between 0 and 10, e.g. [0.5, 0.8, 1.0]")
    return tuple(v.normalize() for v in parsed)


def metadata(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A small JSON object (at most MAX_METADATA_BYTES as JSON), as plain JSON values."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError("metadata must be a JSON object")
    try:
        encoded = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidInputError("metadata must be plain JSON (strings, numbers, lists, objects)") from None
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidInputError(f"metadata is {len(encoded)} bytes as JSON; at most {MAX_METADATA_BYTES} allowed")
    return dict(json.loads(encoded))


def idempotency_key(value: object, namespace: str | None) -> str:
    """The key as stored: printable text, prefixed by its namespace (the caller) when it has one."""
    key = text(value, "idempotency_key", limit=MAX_NAME)
    if not key.isprintable():
        raise InvalidInputError("idempotency_key must be printable text (no control characters)")
    # A control character cannot be in a key, so a namespaced key never equals one without a namespace.
    return key if namespace is None else f"\x1f{namespace}\x1f{key}"


def extra_limit(raw: Mapping[str, Any]) -> Limit:
    """One of `extra_limits`: {"period": ..., "limit_usd"?: ..., "limit_tokens"?: ..., "limit_calls"?: ...}."""
    if not isinstance(raw, Mapping) or "period" not in raw:
        raise InvalidInputError('each extra limit is an object like {"period": "monthly", "limit_usd": "60"}')
    unknown = set(raw) - set(_EXTRA_FIELDS)
    if unknown:
        raise InvalidInputError(f"extra limit has unknown fields {sorted(unknown)}; use {', '.join(_EXTRA_FIELDS)}")
    nanos = _optional_usd(raw.get("limit_usd"), "extra_limits.limit_usd")
    tokens = None if raw.get("limit_tokens") is None else parse_tokens(raw["limit_tokens"], "extra_limits.limit_tokens")
    calls = optional_calls(raw.get("limit_calls"), "extra_limits.limit_calls")
    if nanos is None and tokens is None and calls is None:
        raise InvalidInputError("each extra limit needs limit_usd, limit_tokens and/or limit_calls")
    models, providers = names(raw.get("models"), "models"), names(raw.get("providers"), "providers")
    return Limit(parse_period(raw["period"], "extra_limits.period"), nanos, tokens, calls, models, providers)


_EXTRA_FIELDS = ("period", "limit_usd", "limit_tokens", "limit_calls", "models", "providers")
MAX_NAMES = 20


def names(value: object, field: str) -> tuple[str, ...]:
    """A limit's `models` or `providers`: 1 to MAX_NAMES names, lowercase, sorted; () when not given."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not 1 <= len(value) <= MAX_NAMES:
        raise InvalidInputError(f'{field} must be a list of 1 to {MAX_NAMES} names, e.g. ["openai"]')
    return tuple(sorted({text(v, field, limit=MAX_NAME).strip().lower() for v in value}))


def optional_calls(value: object, field: str) -> int | None:
    """A limit on the number of calls (charges) in a window: a whole number from 0 to MAX_CALLS, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_CALLS:
        raise InvalidInputError(f"{field} must be a whole number of calls from 0 to {MAX_CALLS:,} (got {value!r:.40})")
    return value


def _optional_usd(value: object, field: str) -> int | None:
    return None if value is None else to_nanos(parse_usd(value, field))


@dataclass(frozen=True)
class ChargeRequest:
    """A charge as asked for, checked; `request_hash` tells a retry (same key, same charge) from a reuse."""

    budget_id: str
    path: tuple[str, ...]
    model: str | None
    provider: str | None
    tokens: TokenCounts
    cost_usd: Decimal | None
    reservation_id: str | None
    key: str | None
    metadata: dict[str, Any]
    request_hash: str


def charge_request(
    budget_id: str,
    *,
    model: str | None,
    provider: str | None,
    tokens: Mapping[str, object],
    cost_usd: object,
    reservation_id: str | None,
    idempotency_key_text: str | None,
    key_namespace: str | None,
    metadata_value: Mapping[str, Any] | None,
) -> ChargeRequest:
    """Check every field of a charge; nothing about the ledger yet."""
    validate_budget_id(budget_id)
    counts = TokenCounts(**{kind: parse_tokens(count, f"{kind}_tokens") for kind, count in tokens.items()})
    if reservation_id is not None:
        validate_reservation_id(reservation_id)
    key = idempotency_key(idempotency_key_text, key_namespace) if idempotency_key_text is not None else None
    meta = metadata(metadata_value)
    model = text(model, "model", limit=MAX_NAME) if model else None
    provider = optional_text(provider, "provider")
    cost = parse_usd(cost_usd, "cost_usd") if cost_usd is not None else None
    request_hash = "" if key is None else _hash(  # only a charge with a key is compared with an earlier one
        budget_id=budget_id, model=model, provider=provider, tokens=counts.__dict__,
        cost_usd=str(cost) if cost is not None else None, reservation_id=reservation_id, metadata=meta,
    )  # fmt: skip
    return ChargeRequest(
        budget_id, path_of(budget_id), model, provider, counts, cost, reservation_id, key, meta, request_hash
    )


@dataclass(frozen=True)
class AllocationRequest:
    """An allocation as asked for: each field None when not given (a resize keeps what it had)."""

    budget_id: str
    path: tuple[str, ...]
    limit_nanos: int | None
    limit_tokens: int | None
    limit_calls: int | None
    period: AnyPeriod | None
    extra_limits: tuple[Limit, ...] | None
    per_call_nanos: int | None
    enforcement: Enforcement | None
    alert_at: tuple[Decimal, ...] | None
    timezone: str | None
    description: str | None
    metadata: dict[str, Any] | None
    expires_at: datetime | None = None


MAX_LIFETIME_SECONDS = 90 * 86_400


def expiry(expires_at: object, ttl_seconds: object, now: datetime) -> datetime | None:
    """When a sub-budget closes itself: `expires_at` (ISO 8601 with a UTC offset) or `now` + `ttl_seconds`,
    in the future and at most 90 days ahead; None when neither is given."""
    if expires_at is not None and ttl_seconds is not None:
        raise InvalidInputError("give expires_at or ttl_seconds, not both")
    if ttl_seconds is not None:
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or not 1 <= ttl_seconds:
            raise InvalidInputError(f"ttl_seconds must be a whole number of seconds from 1 to {MAX_LIFETIME_SECONDS}")
        at = now + timedelta(seconds=min(ttl_seconds, MAX_LIFETIME_SECONDS + 1))
    elif expires_at is not None:
        try:
            at = datetime.fromisoformat(str(text(expires_at, "expires_at", limit=40)))
        except ValueError:
            raise InvalidInputError('expires_at must be an ISO 8601 time, e.g. "2026-12-02T18:00:00Z"') from None
        if at.tzinfo is None:
            raise InvalidInputError('expires_at needs a UTC offset, e.g. "2026-12-02T18:00:00Z"')
        at = at.astimezone(UTC)
    else:
        return None
    if at <= now:
        raise InvalidInputError(f"expires_at {at:%Y-%m-%d %H:%M:%S} UTC is not in the future; give a later time")
    if at - now > timedelta(seconds=MAX_LIFETIME_SECONDS):
        raise InvalidInputError("a sub-budget may expire at most 90 days ahead; give an earlier expires_at")
    return at


def allocation_request(
    budget_id: str,
    *,
    limit_usd: object = None,
    limit_tokens: object = None,
    limit_calls: object = None,
    period: object = None,
    extra_limits: Sequence[Mapping[str, Any]] | None = None,
    per_call_usd: object = None,
    enforcement: object = None,
    alert_at: Sequence[object] | None = None,
    timezone: str | None = None,
    description: object = None,
    metadata_value: Mapping[str, Any] | None = None,
    expires_at: datetime | None = None,
) -> AllocationRequest:
    """Check every field of an allocation; nothing about the ledger yet."""
    validate_budget_id(budget_id)
    if extra_limits is not None and len(extra_limits) > len(Period):
        raise InvalidInputError(f"extra_limits has {len(extra_limits)} limits; at most one per period ({len(Period)})")
    if timezone is not None:
        zone(timezone)
    return AllocationRequest(
        budget_id=budget_id,
        path=path_of(budget_id),
        limit_nanos=_optional_usd(limit_usd, "limit_usd"),
        limit_tokens=None if limit_tokens is None else parse_tokens(limit_tokens, "limit_tokens"),
        limit_calls=optional_calls(limit_calls, "limit_calls"),
        period=None if period is None else parse_period(period),
        extra_limits=None if extra_limits is None else tuple(extra_limit(x) for x in extra_limits),
        per_call_nanos=_optional_usd(per_call_usd, "per_call_usd"),
        enforcement=None if enforcement is None else choice(Enforcement, enforcement, "enforcement"),
        alert_at=None if alert_at is None else thresholds(alert_at),
        timezone=timezone,
        description=None if description is None else text(description, "description"),
        metadata=None if metadata_value is None else metadata(metadata_value),
        expires_at=expires_at,
    )


def _hash(**request: Any) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()
