"""Model prices: exact costs with the price and source that produced them."""

from budget_mcp.pricing.catalog import PriceCatalog
from budget_mcp.pricing.types import PricedCost

__all__ = ["PriceCatalog", "PricedCost"]
