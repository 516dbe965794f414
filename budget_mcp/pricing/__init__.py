"""Model prices and facts: exact costs with the price and source that produced them."""

from budget_mcp.pricing.catalog import PriceCatalog, remote_sources
from budget_mcp.pricing.compare import RateComparison
from budget_mcp.pricing.names import canonical_provider
from budget_mcp.pricing.refresh import RefreshOutcome, refresh_sources
from budget_mcp.pricing.sources.remote import RemoteSource
from budget_mcp.pricing.types import Capability, ModelFacts, PricedCost, SourceInfo, Tier

__all__ = [
    "Capability",
    "ModelFacts",
    "PriceCatalog",
    "PricedCost",
    "RateComparison",
    "RefreshOutcome",
    "RemoteSource",
    "SourceInfo",
    "Tier",
    "canonical_provider",
    "refresh_sources",
    "remote_sources",
]
