"""Stored forms of budget definitions and metadata, shared by every backend."""

import functools
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from budget_mcp.domain.records import BudgetConfig, Enforcement, Limit
from budget_mcp.domain.windows import parse_period

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(at: datetime) -> int:
    """Aware datetime to integer microseconds since the epoch (exact, no float)."""
    return (at - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    """Integer microseconds since the epoch to an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def config_to_json(config: BudgetConfig) -> str:
    """A budget definition as compact JSON (amounts as integers, thresholds as strings)."""
    return json.dumps(
        {
            "period": config.period.value,
            "limits": [limit_to_json(lim) for lim in config.limits],
            "per_call_nanos": config.per_call_nanos,
            "enforcement": config.enforcement.value,
            "alert_at": [str(a) for a in config.alert_at],
            "timezone": config.timezone,
            "description": config.description,
            "metadata": config.metadata,
            **({"owner": config.owner} if config.owner else {}),
            **({"declared": config.declared} if config.declared else {}),
            **({"expires_at_us": to_us(config.expires_at)} if config.expires_at else {}),
        },
        separators=(",", ":"),
        sort_keys=True,
    )


@functools.lru_cache(maxsize=4096)
def config_from_row(budget_id: str, text: str, closed: bool, created_at_us: int) -> BudgetConfig:
    """A budget's stored row as its config (answers are kept: every snapshot reads the same few rows again)."""
    return config_from_json(budget_id, text, closed=bool(closed), created_at=from_us(created_at_us))


def config_from_json(budget_id: str, text: str, *, closed: bool, created_at: datetime) -> BudgetConfig:
    """The inverse of config_to_json."""
    raw = json.loads(text)
    return BudgetConfig(
        budget_id=budget_id,
        period=parse_period(raw["period"]),
        limits=tuple(limit_from_json(x) for x in raw["limits"]),
        per_call_nanos=raw["per_call_nanos"],
        enforcement=Enforcement(raw["enforcement"]),
        alert_at=tuple(Decimal(a) for a in raw["alert_at"]),
        timezone=raw["timezone"],
        description=raw["description"],
        metadata=raw["metadata"],
        closed=closed,
        created_at=created_at,
        owner=raw.get("owner"),
        declared=raw.get("declared"),
        expires_at=from_us(raw["expires_at_us"]) if raw.get("expires_at_us") is not None else None,
    )


def limit_to_json(lim: Limit) -> dict[str, Any]:
    """One limit as stored; one with totals of its own also stores their `key` (and a rolling one how many seconds
    back its buckets count, `span_s`), which the PostgreSQL load reads."""
    out: dict[str, Any] = {"period": lim.period.value, "limit_nanos": lim.limit_nanos, "limit_tokens": lim.limit_tokens}
    if lim.limit_calls is not None:
        out["limit_calls"] = lim.limit_calls
    if lim.filtered:
        out.update(models=list(lim.models), providers=list(lim.providers), key=lim.key)
    if lim.rolling is not None:
        out.update(key=lim.key, span_s=lim.rolling.seconds + lim.rolling.bucket_seconds)
    return out


def limit_from_json(x: Mapping[str, Any]) -> Limit:
    """The inverse of limit_to_json."""
    return Limit(
        parse_period(x["period"]), x["limit_nanos"], x["limit_tokens"], x.get("limit_calls"),
        tuple(x.get("models", ())), tuple(x.get("providers", ())),
    )  # fmt: skip


def redact_url(url: str) -> str:
    """A database URL without its password, fit for messages and logs."""
    head, at, host = url.rpartition("@")
    if not at:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}@{host}"
