"""PriceCatalog: every model's price from layered sources, exact costs that name the price and source used.

Lookup order, first hit wins: local overrides, genai-prices (its published file when one was fetched,
then the bundled snapshot), then LiteLLM and OpenRouter for models genai-prices does not know.
genai-prices leads because it models prices most exactly (cache tokens, context tiers, the names
providers answer with); the other sources widen coverage and serve to verify it.
"""

import difflib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from budget_mcp.domain.records import TokenCounts
from budget_mcp.errors import PriceSourceError, UnknownModelError
from budget_mcp.pricing import facts as shipped
from budget_mcp.pricing.compare import RateComparison, compare
from budget_mcp.pricing.names import canonical_provider, model_key, split_model
from budget_mcp.pricing.sources import bundled, litellm, openrouter, overrides, remote
from budget_mcp.pricing.sources.bundled import GenaiPrices
from budget_mcp.pricing.types import RATE_KINDS, ModelFacts, ModelRates, PricedCost, Rates, SourceInfo

logger = logging.getLogger(__name__)

REMOTE_PARSERS: dict[str, Callable[[bytes], list[ModelRates]]] = {
    litellm.NAME: litellm.parse,
    openrouter.NAME: openrouter.parse,
}
REMEMBERED_PRICES = 4096  # answers of `cost` kept (all forgotten when full)
DEFAULT_URLS = {
    bundled.NAME: bundled.PUBLISHED_URL,
    litellm.NAME: litellm.DEFAULT_URL,
    openrouter.NAME: openrouter.DEFAULT_URL,
}


class _Layer(Protocol):
    @property
    def info(self) -> SourceInfo: ...

    def price(self, model: str, provider: str | None, tokens: TokenCounts) -> PricedCost | None: ...


class _RatesTable:
    """A flat-rate source (overrides, LiteLLM, OpenRouter) looked up by model name, and provider when given."""

    def __init__(self, prices: Iterable[ModelRates], info: SourceInfo) -> None:
        self.info = info
        self.prices = list(prices)
        self._by_name: dict[str, list[ModelRates]] = {}
        for price in self.prices:
            self._by_name.setdefault(model_key(price.model), []).append(price)

    def price(self, model: str, provider: str | None, tokens: TokenCounts) -> PricedCost | None:
        prefix, name = split_model(model)
        wanted = canonical_provider(provider or prefix or "") or None
        candidates = self._by_name.get(model_key(model), []) + self._by_name.get(model_key(name), [])
        for price in candidates:
            if wanted is None or price.provider in ("", wanted):
                rates = price.rates_for(tokens)
                return PricedCost(
                    cost_usd=rates.cost(tokens),
                    model=price.model,
                    provider=price.provider or wanted or "",
                    source=self.info.label,
                    input_mtok=rates.input,
                    output_mtok=rates.output,
                    cache_read_mtok=rates.cache_read,
                    cache_write_mtok=rates.cache_write,
                )
        return None

    def names(self) -> set[str]:
        return {model_key(p.model) for p in self.prices}


class PriceCatalog:
    """Prices for models by name (and optional provider). Without arguments: the bundled genai-prices snapshot.

    `cache_dir` adds the last good copies of the remote sources fetched by `budget-mcp prices refresh`;
    `overrides_file` adds local prices that win over everything. `reload()` rereads both.
    """

    def __init__(self, *, cache_dir: Path | None = None, overrides_file: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self.overrides_file = overrides_file
        self._bundled = GenaiPrices.bundled()
        self.reload()

    def reload(self) -> None:
        """Reread the overrides file and the cached remote copies (after a refresh)."""
        layers: list[_Layer] = []
        self._remembered: dict[tuple[str, str | None, TokenCounts, int], PricedCost] = {}
        self._comparable: dict[str, list[ModelRates]] = {}
        if self.overrides_file is not None:
            prices, info = overrides.load(self.overrides_file)
            layers.append(_RatesTable(prices, info))
        published = self._cached_published()
        if published is not None:
            layers.append(published)
        layers.append(self._bundled)
        primary = published or self._bundled
        self._primary = primary
        for name, parse in REMOTE_PARSERS.items():
            table = self._cached_table(name, parse)
            if table is not None:
                layers.append(table)
                self._comparable[name] = table.prices
        self._layers = layers
        self.__dict__.pop("comparisons", None)
        self.__dict__.pop("model_names", None)

    @property
    def sources(self) -> list[SourceInfo]:
        """The sources in lookup order."""
        return [layer.info for layer in self._layers]

    def cost(self, model: str, provider: str | None, tokens: TokenCounts) -> PricedCost:
        """Exact cost of a call with these token counts; UnknownModelError lists close names when not found.

        Answers are remembered for the hour (a guard asks the same worst case before every call, and
        genai-prices takes ~0.1 ms a price); `reload()` forgets them.
        """
        key = (model, provider, tokens, int(time.time() // 3600))
        known = self._remembered.get(key)
        if known is None:
            known = self._price(model, provider, tokens)
            if len(self._remembered) >= REMEMBERED_PRICES:
                self._remembered.clear()
            self._remembered[key] = known
        return known

    def _price(self, model: str, provider: str | None, tokens: TokenCounts) -> PricedCost:
        prefix, name = split_model(model)
        attempts = [(model, provider)]
        if prefix and not provider:  # 'openai/gpt-4o', as OpenRouter and LiteLLM spell it
            attempts.append((name, canonical_provider(prefix)))
        for layer in self._layers:
            for wanted, within in attempts:
                priced = layer.price(wanted, within, tokens)
                if priced is not None:
                    return priced
        raise UnknownModelError(self._unknown_message(model, provider))

    def facts(self, model: str, provider: str | None = None) -> ModelFacts | None:
        """Context window, capabilities and tier of a model, when the shipped table has it."""
        return shipped.find_facts(model, canonical_provider(provider) if provider else None)

    def candidates(self) -> tuple[ModelFacts, ...]:
        """The models recommend_model chooses from: those with curated facts and a tier."""
        return shipped.model_facts()

    @cached_property
    def comparisons(self) -> list[RateComparison]:
        """Each rate that two or more sources give for the same model (see `pricing.compare`)."""
        if not self._comparable:
            return []
        sources = {self._primary.info.name: self._primary.all_rates(), **self._comparable}
        return compare(sources)

    def flagged(self, model: str, provider: str) -> list[RateComparison]:
        """The rates of this model on which the sources disagree by more than 5%."""
        key = (provider, model_key(model))
        return [c for c in self.comparisons if c.flagged and (c.provider, model_key(c.model)) == key]

    @cached_property
    def model_names(self) -> list[str]:
        """Every known model id, sorted."""
        names = {m.model for m in self._bundled.all_rates()}
        for layer in self._layers:
            if isinstance(layer, _RatesTable):
                names |= {p.model for p in layer.prices}
        return sorted(names)

    def describe(self) -> dict[str, Any]:
        """The catalog as budget://prices shows it: sources, the recommendable models, overrides, disagreements."""
        models = []
        for facts in self.candidates():
            try:
                priced = self.cost(facts.model, facts.provider, TokenCounts())
            except UnknownModelError:
                continue
            flagged = self.flagged(facts.model, facts.provider)
            models.append(
                {
                    "provider": facts.provider,
                    "model": facts.model,
                    "tier": facts.tier,
                    "context_window": facts.context_window,
                    "max_output_tokens": facts.max_output_tokens,
                    "capabilities": sorted(facts.capabilities),
                    **_rates_json(priced),
                    "source": priced.source,
                    "flagged": bool(flagged),
                    "disagreements": [_comparison_json(c) for c in flagged],
                }
            )
        compared = self.comparisons
        return {
            "sources": [_source_json(info) for info in self.sources],
            "models": models,
            "overrides": [
                {"provider": p.provider or None, "model": p.model, **_rates_json(p.rates)}
                for layer in self._layers
                if isinstance(layer, _RatesTable) and layer.info.name == overrides.NAME
                for p in layer.prices
            ],
            "verification": {
                "compared_rates": len(compared),
                "max_spread_percent": "5",
                "flagged": [_comparison_json(c) for c in compared if c.flagged],
            },
            "note": (
                f"{self._bundled.info.models} models can be priced (estimate_cost); "
                "this list holds the models recommend_model chooses from"
            ),
        }

    def _unknown_message(self, model: str, provider: str | None) -> str:
        where = f" from provider {provider!r}" if provider else ""
        close = difflib.get_close_matches(model.lower(), self.model_names, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}; " if close else ""
        return f"no price known for model {model[:100]!r}{where}; {hint}pass cost_usd to record the cost directly"

    def _cached_published(self) -> GenaiPrices | None:
        copy = remote.cached(self.cache_dir, bundled.NAME) if self.cache_dir else None
        if copy is None:
            return None
        try:
            return GenaiPrices.published(copy.read(), copy.fetched_at, copy.sha256)
        except (OSError, PriceSourceError) as exc:
            logger.warning("ignoring the cached genai-prices file %s: %s", copy.path, exc)
            return None

    def _cached_table(self, name: str, parse: Callable[[bytes], list[ModelRates]]) -> _RatesTable | None:
        copy = remote.cached(self.cache_dir, name) if self.cache_dir else None
        if copy is None:
            return None
        try:
            prices = parse(copy.read())
        except (OSError, PriceSourceError) as exc:
            logger.warning("ignoring the cached %s file %s: %s", name, copy.path, exc)
            return None
        info = SourceInfo(name, copy.sha256[:12], copy.fetched_at, copy.url, len(prices))
        return _RatesTable(prices, info)


def remote_sources(urls: dict[str, str] | None = None) -> list[remote.RemoteSource]:
    """The remote sources with their URLs (defaults, or the given overrides; a file path works as a mirror)."""
    chosen = {**DEFAULT_URLS, **(urls or {})}
    return [remote.RemoteSource(name, chosen[name], functools.partial(_count_models, name)) for name in DEFAULT_URLS]


def _count_models(name: str, raw: bytes) -> int:
    """How many models a fetched file holds; PriceSourceError when it is not that source's format."""
    if name == bundled.NAME:
        return GenaiPrices.published(raw).info.models
    return len(REMOTE_PARSERS[name](raw))


def _rates_json(rates: PricedCost | Rates) -> dict[str, str | None]:
    if isinstance(rates, PricedCost):
        values = (rates.input_mtok, rates.output_mtok, rates.cache_read_mtok, rates.cache_write_mtok)
    else:
        values = (rates.input, rates.output, rates.cache_read, rates.cache_write)
    return {f"{kind}_usd_per_mtok": None if v is None else f"{v:f}" for kind, v in zip(RATE_KINDS, values, strict=True)}


def _comparison_json(c: RateComparison) -> dict[str, Any]:
    return {
        "provider": c.provider,
        "model": c.model,
        "rate": c.kind,
        "usd_per_mtok": {source: f"{value:f}" for source, value in c.values.items()},
        "spread_percent": "inf" if not c.spread.is_finite() else f"{c.spread * 100:.1f}",
    }


def _source_json(info: SourceInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "fetched_at": info.fetched_at.isoformat() if info.fetched_at else None,
        "origin": info.origin,
        "models": info.models,
    }
