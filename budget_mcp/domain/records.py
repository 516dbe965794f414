"""What is stored: budget definitions, ledger entries, holds and alerts, in integer nano-USD (`*_nanos`).

The vocabularies (enforcement, decisions, entry kinds) are `StrEnum`s holding the SPEC's strings.
"""

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from budget_mcp.domain.windows import AnyPeriod, Rolling

DEFAULT_ALERT_AT = (Decimal("0.5"), Decimal("0.8"), Decimal("0.9"), Decimal("1.0"))


class Enforcement(StrEnum):
    """What happens when a check would exceed a limit."""

    BLOCK = "block"  # deny what would exceed
    WARN = "warn"  # allow it, flagged
    SOFT = "soft"  # allow it, flagged, and suggest a cheaper model that fits
    ASK = "ask"  # deny it unless the person at the client approves (MCP elicitation)


class Decision(StrEnum):
    """The answer of a check."""

    ALLOW = "allow"
    WARN = "warn"
    DENY = "deny"


class EntryKind(StrEnum):
    """What a ledger entry records. Only `charge` and `adjust` count as spend."""

    CHARGE = "charge"
    ADJUST = "adjust"
    HOLD = "hold"
    RELEASE = "release"
    ALLOCATE = "allocate"
    CLOSE = "close"
    APPROVAL = "approval"  # a person approved going over an `ask` limit


SPEND_KINDS = frozenset({EntryKind.CHARGE, EntryKind.ADJUST})


class Answer(StrEnum):
    """What the person at the client answered when asked to approve going over an `ask` limit."""

    APPROVED = "approved"
    DECLINED = "declined"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Approval:
    """A person's answer to going over an `ask` limit, and who gave it (client, version, the caller's token)."""

    answer: Answer
    client_name: str | None = None
    client_version: str | None = None
    token_name: str | None = None
    reason: str | None = None
    question: str | None = None  # as the person saw it


def limit_key(period: AnyPeriod, models: Sequence[str] = (), providers: Sequence[str] = ()) -> str:
    """A limit's key: its period's name ("daily", "5h"), or with models or providers its own ("daily~1f2e...")."""
    if not models and not providers:
        return period.value
    names = "\x1f".join(sorted(models)) + "\x1e" + "\x1f".join(sorted(providers))
    return f"{period.value}~{hashlib.sha256(names.encode()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Limit:
    """One limit of a budget: USD, tokens and/or calls (charges) per window of `period` (calendar or rolling).

    With `models` and/or `providers` (lowercase), only charges for those count against it, on running totals of
    its own (`key`), and only checks that may be for those are decided by it. A rolling limit also keeps running
    totals of its own (per bucket, `key` "5h" or "5h~1f2e..."). Set on a budget that has spent already, either
    starts from the matching spend already in its window.
    """

    period: AnyPeriod
    limit_nanos: int | None = None
    limit_tokens: int | None = None
    limit_calls: int | None = None
    models: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()

    @property
    def filtered(self) -> bool:
        return bool(self.models or self.providers)

    @property
    def rolling(self) -> Rolling | None:
        return self.period if isinstance(self.period, Rolling) else None

    @property
    def keeps_own(self) -> bool:
        """Whether it reads running totals of its own (filtered or rolling) rather than its period's."""
        return self.filtered or isinstance(self.period, Rolling)

    @functools.cached_property
    def key(self) -> str:
        """The running totals it reads: its period's, or for a filtered limit its own ("daily~1f2e...")."""
        return limit_key(self.period, self.models, self.providers)

    def counts(self, model: str | None, provider: str | None) -> bool:
        """Whether a charge for this model and provider counts against it (an unnamed one counts only unfiltered)."""
        return (not self.models or (model or "").lower() in self.models) and (
            not self.providers or (provider or "").lower() in self.providers
        )

    def decides(self, model: str | None, provider: str | None) -> bool:
        """Whether it decides a check for this model and provider: a check that does not say may be for any."""
        return (not self.models or model is None or model.lower() in self.models) and (
            not self.providers or provider is None or provider.lower() in self.providers
        )


@dataclass(frozen=True)
class BudgetConfig:
    """A budget's definition as stored. `limits[0]` is the primary limit when there is one."""

    budget_id: str
    period: AnyPeriod
    limits: tuple[Limit, ...] = ()
    per_call_nanos: int | None = None
    enforcement: Enforcement = Enforcement.BLOCK
    alert_at: tuple[Decimal, ...] = DEFAULT_ALERT_AT
    timezone: str = "UTC"
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    created_at: datetime | None = None
    owner: str | None = None  # the scoped token that created this root with create_roots; it may keep using it
    declared: str | None = None  # digest of the budgets-file entry last applied to it
    expires_at: datetime | None = None  # when it closes itself, returning what is unspent to its parent

    def expired(self, now: datetime) -> bool:
        """Whether it is open past its `expires_at` (it closes at the next write to its tree, or the sweep)."""
        return not self.closed and self.expires_at is not None and self.expires_at <= now

    def limit_for(self, period: AnyPeriod) -> Limit | None:
        """This budget's limit of `period` on all its spend (not one filtered by model or provider), if it has one."""
        return next((lim for lim in self.limits if lim.period == period and not lim.filtered), None)

    @property
    def primary(self) -> Limit:
        """The primary limit (an empty one for a track-only budget)."""
        return self.limit_for(self.period) or Limit(self.period)


@dataclass(frozen=True)
class TokenCounts:
    """Token counts of one call; `total` is what token limits count."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write + self.reasoning


MAX_SEQ = 2**63 - 1  # the largest sequence number an entry can have on either backend


@dataclass(frozen=True)
class Entry:
    """One append-only ledger entry."""

    entry_id: str
    kind: EntryKind
    budget_id: str
    at: datetime
    cost_nanos: int = 0
    tokens: TokenCounts = TokenCounts()
    model: str | None = None
    provider: str | None = None
    price_source: str | None = None
    reservation_id: str | None = None
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    seq: int | None = None  # its sequence number in the log, when read from it (a new entry has none yet)


HeldFor = tuple[str | None, str | None]  # the (model, provider) a hold is for, as the check named them


@dataclass(frozen=True)
class Hold:
    """An open reservation: `cost_nanos` and `tokens` held on the whole path until `expires_at`.

    `model` and `provider` are those of the check it was made for (None where it named none). A filtered limit
    counts the hold when it would decide that check (`Limit.decides`), so a hold naming no model or provider
    counts against every filtered limit on its path: it may be for any.
    """

    reservation_id: str
    budget_id: str
    cost_nanos: int
    tokens: int
    created_at: datetime
    expires_at: datetime
    model: str | None = None
    provider: str | None = None

    @property
    def of(self) -> HeldFor:
        """The model and provider it is held for."""
        return self.model, self.provider


@dataclass(frozen=True)
class AlertRecord:
    """A threshold of a limit crossed in one window (recorded once per window; for a rolling window, once while
    an alert of it is still inside the window, keyed by the bucket it was crossed in)."""

    budget_id: str
    period: AnyPeriod
    window_key: int
    threshold: Decimal
    at: datetime
    spent_nanos: int
    limit_nanos: int | None
    limit_tokens: int | None
    spent_tokens: int
    entry_id: str | None = None  # the entry whose write crossed it (None for alerts stored before schema 4)
    filtered_key: str | None = None  # a filtered limit's key ("daily~1f2e..."): its alerts are apart from the period's
    models: tuple[str, ...] = ()  # that limit's models and providers (stored with it since schema 7 / 5 on Postgres)
    providers: tuple[str, ...] = ()

    @property
    def limit_key(self) -> str:
        """The limit it is of, as stored: its period's name, or a filtered limit's key."""
        return self.filtered_key or self.period.value


@dataclass(frozen=True)
class DeliveryAttempt:
    """One attempt to deliver an alert (budget, limit, window, threshold) to the webhook: HTTP status or error."""

    budget_id: str
    period: AnyPeriod
    window_key: int
    threshold: Decimal
    attempt: int
    at: datetime
    status: int | None
    error: str | None
    filtered_key: str | None = None  # as AlertRecord's

    @property
    def limit_key(self) -> str:
        return self.filtered_key or self.period.value

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def is_for(self, alert: AlertRecord) -> bool:
        """Whether this attempt delivered (or tried to deliver) `alert`."""
        return (self.budget_id, self.limit_key, self.window_key, self.threshold) == (
            alert.budget_id, alert.limit_key, alert.window_key, alert.threshold,
        )  # fmt: skip
