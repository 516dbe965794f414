"""genai-prices: pydantic's price data, embedded in the package (offline) or as the file it publishes.

genai-prices is the primary source: it knows ~2,300 models with exact Decimal prices, cache tokens,
context-length tiers and the names providers answer with. This is the only module that imports it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from importlib.metadata import version
from typing import TYPE_CHECKING

from budget_mcp.domain.records import TokenCounts
from budget_mcp.errors import PriceSourceError
from budget_mcp.pricing.types import ModelRates, PricedCost, Rates, SourceInfo

if TYPE_CHECKING:  # genai-prices itself is imported when prices are first needed, not at start
    from genai_prices import data_snapshot

NAME = "genai-prices"
VERSION = version("genai-prices")
PUBLISHED_URL = "https://raw.githubusercontent.com/pydantic/genai-prices/refs/heads/main/prices/new_data/v2/data.json"


class GenaiPrices:
    """Prices from one genai-prices data snapshot: the bundled one, or a published file fetched later.

    The bundled snapshot is read on first use (about 90 ms), not when the server starts.
    """

    def __init__(self, snapshot: Callable[[], data_snapshot.DataSnapshot], info: SourceInfo) -> None:
        self._load = snapshot
        self._info = info

    @cached_property
    def _snapshot(self) -> data_snapshot.DataSnapshot:
        return self._load()

    @cached_property
    def info(self) -> SourceInfo:
        """The source, with the number of models it prices."""
        return dataclasses.replace(self._info, models=_count(self._snapshot))

    @classmethod
    def bundled(cls) -> GenaiPrices:
        """The snapshot shipped inside the pinned genai-prices package."""

        def load() -> data_snapshot.DataSnapshot:
            from genai_prices import data_snapshot

            return data_snapshot.get_snapshot()

        return cls(load, SourceInfo(NAME, VERSION))

    @classmethod
    def published(cls, raw: bytes, fetched_at: datetime | None = None, checksum: str = "") -> GenaiPrices:
        """Parse genai-prices' published data file; PriceSourceError when it is not that format."""
        # The parser is private in genai-prices; its version is pinned exactly, and a test covers this call.
        from genai_prices import data_snapshot
        from genai_prices.types import _providers_from_raw

        try:
            providers = _providers_from_raw(json.loads(raw))
        except ValueError as exc:  # json and pydantic validation errors are both ValueErrors
            raise PriceSourceError(f"not a genai-prices data file: {str(exc)[:200]}") from exc
        snapshot = data_snapshot.DataSnapshot(providers, from_auto_update=False)
        version = f"data {checksum[:12]}" if checksum else "data"
        return cls(lambda: snapshot, SourceInfo(NAME, version, fetched_at or datetime.now(UTC)))

    def price(self, model: str, provider: str | None, tokens: TokenCounts) -> PricedCost | None:
        """The exact cost of one call, or None when this snapshot has no such model."""
        # genai-prices counts cache tokens inside input_tokens; ours are separate, and reasoning bills as output.
        from genai_prices import Usage

        usage = Usage(
            input_tokens=tokens.input + tokens.cache_read + tokens.cache_write,
            output_tokens=tokens.output + tokens.reasoning,
            cache_read_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write,
        )
        try:
            calc = self._snapshot.calc(usage, model, provider, None, None)
        except LookupError:
            return None
        rates, prompt = calc.model_price, tokens.input + tokens.cache_read + tokens.cache_write
        return PricedCost(
            cost_usd=Decimal(calc.total_price),
            model=calc.model.id,
            provider=calc.provider.id,
            source=self.info.label,
            input_mtok=_applied(rates.input_mtok, prompt),
            output_mtok=_applied(rates.output_mtok, prompt),
            cache_read_mtok=_applied(rates.cache_read_mtok, prompt),
            cache_write_mtok=_applied(rates.cache_write_mtok, prompt),
        )

    def context_window(self, model: str, provider: str | None) -> int | None:
        """The model's context window as genai-prices knows it, or None."""
        try:
            _, info = self._snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            return None
        return info.context_window

    def all_rates(self) -> list[ModelRates]:
        """Current base rates (and tiers) of every model, for comparison with other sources."""
        now = datetime.now(UTC)
        found = []
        for provider in self._snapshot.providers:
            for model in provider.models:
                price = model.get_prices(now)
                base = Rates(*(_base(getattr(price, f"{k}_mtok", None)) for k in _KINDS))
                found.append(ModelRates(provider.id, model.id, base, _tiers(price)))
        return found


_KINDS = ("input", "output", "cache_read", "cache_write")


def _count(snapshot: data_snapshot.DataSnapshot) -> int:
    return sum(len(p.models) for p in snapshot.providers)


def _applied(value: object, prompt_tokens: int) -> Decimal | None:
    """The per-million rate a call of this prompt size pays (genai-prices' cliff tiers: above `start`)."""
    from genai_prices.types import TieredPrices

    if isinstance(value, TieredPrices):
        return next((t.price for t in reversed(value.tiers) if prompt_tokens > t.start), value.base)
    return value if isinstance(value, Decimal) else None


def _base(value: object) -> Decimal | None:
    from genai_prices.types import TieredPrices

    if isinstance(value, TieredPrices):
        return value.base
    return value if isinstance(value, Decimal) else None


def _tiers(price: object) -> tuple[tuple[int, Rates], ...]:
    from genai_prices.types import TieredPrices

    starts = sorted(
        {t.start for k in _KINDS if isinstance(v := getattr(price, f"{k}_mtok", None), TieredPrices) for t in v.tiers}
    )
    tiers = []
    for start in starts:
        values: list[Decimal | None] = []
        for kind in _KINDS:
            value = getattr(price, f"{kind}_mtok", None)
            if isinstance(value, TieredPrices):
                applicable = [t.price for t in value.tiers if t.start <= start]
                values.append(applicable[-1] if applicable else value.base)
            else:
                values.append(_base(value))
        tiers.append((start, Rates(*values)))
    return tuple(tiers)
