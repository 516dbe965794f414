"""Values the price catalog hands out and its sources produce. Rates are exact Decimal USD per million tokens."""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum

from budget_mcp.domain.records import TokenCounts

MILLION = Decimal(1_000_000)
RATE_KINDS = ("input", "output", "cache_read", "cache_write")


def mtok_from_per_token(value: object) -> Decimal | None:
    """A per-token price (decimal text, int or Decimal; never a float) as USD per million tokens; None if unusable."""
    if not isinstance(value, str | int | Decimal) or isinstance(value, bool):
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return (number * MILLION).normalize() if number.is_finite() and number >= 0 else None


@dataclass(frozen=True)
class Rates:
    """Flat per-million-token rates; None when the source does not give one."""

    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None

    def get(self, kind: str) -> Decimal | None:
        """The rate of one kind ('input', 'output', 'cache_read', 'cache_write')."""
        value: Decimal | None = getattr(self, kind)
        return value

    def cost(self, tokens: TokenCounts) -> Decimal:
        """Exact cost; cache tokens without their own rate pay the input rate, reasoning pays the output rate."""
        input_rate = self.input or Decimal(0)
        output_rate = self.output or Decimal(0)
        cache_read = self.cache_read if self.cache_read is not None else input_rate
        cache_write = self.cache_write if self.cache_write is not None else input_rate
        total = (
            tokens.input * input_rate
            + (tokens.output + tokens.reasoning) * output_rate
            + tokens.cache_read * cache_read
            + tokens.cache_write * cache_write
        )
        return total / MILLION


@dataclass(frozen=True)
class ModelRates:
    """One source's price for one model: base rates, plus cliff tiers (above N input tokens, all tokens pay more)."""

    provider: str
    model: str
    rates: Rates
    tiers: tuple[tuple[int, Rates], ...] = ()

    def rates_for(self, tokens: TokenCounts) -> Rates:
        """The rates that apply to a call of this size (the highest tier whose threshold the input exceeds)."""
        prompt = tokens.input + tokens.cache_read + tokens.cache_write
        chosen = self.rates
        for threshold, tier in sorted(self.tiers, key=lambda t: t[0]):
            if prompt > threshold:
                chosen = Rates(*(tier.get(k) if tier.get(k) is not None else chosen.get(k) for k in RATE_KINDS))
        return chosen


@dataclass(frozen=True)
class PricedCost:
    """The exact cost of one call, and which price and source produced it (rates in USD per million tokens)."""

    cost_usd: Decimal
    model: str
    provider: str
    source: str
    input_mtok: Decimal | None = None
    output_mtok: Decimal | None = None
    cache_read_mtok: Decimal | None = None
    cache_write_mtok: Decimal | None = None


class Tier(StrEnum):
    """Quality tiers, lowest first."""

    BASIC = "basic"
    STANDARD = "standard"
    ADVANCED = "advanced"
    FRONTIER = "frontier"

    @property
    def rank(self) -> int:
        """0 for basic up to 3 for frontier."""
        return list(Tier).index(self)


class Capability(StrEnum):
    """What a task may need from a model."""

    TOOLS = "tools"
    VISION = "vision"
    REASONING = "reasoning"
    JSON = "json"
    LONG_CONTEXT = "long_context"


LONG_CONTEXT_TOKENS = 500_000


@dataclass(frozen=True)
class ModelFacts:
    """What a model can do, from the shipped table (LiteLLM's facts plus curated tiers)."""

    provider: str
    model: str
    tier: Tier
    context_window: int
    max_input_tokens: int
    max_output_tokens: int
    capabilities: frozenset[Capability] = field(default_factory=frozenset)

    def fits(self, input_tokens: int, output_tokens: int) -> bool:
        """Whether a call of this size fits the model's window and output limit."""
        return (
            input_tokens + output_tokens <= self.context_window
            and input_tokens <= self.max_input_tokens
            and output_tokens <= self.max_output_tokens
        )


@dataclass(frozen=True)
class SourceInfo:
    """Where a set of prices came from: a name, a version (package version or checksum), when it was fetched."""

    name: str
    version: str
    fetched_at: datetime | None = None
    origin: str | None = None
    models: int = 0

    @property
    def label(self) -> str:
        """A short text naming the source, as recorded on each charge."""
        when = f", fetched {self.fetched_at:%Y-%m-%dT%H:%MZ}" if self.fetched_at else ""
        return f"{self.name} {self.version}{when}"
