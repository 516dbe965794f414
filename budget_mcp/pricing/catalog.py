"""PriceCatalog: looks up a model's price and computes exact costs, naming the price and source used."""

import difflib
from functools import cached_property

from budget_mcp.domain.models import TokenCounts
from budget_mcp.errors import UnknownModelError
from budget_mcp.pricing.sources import bundled
from budget_mcp.pricing.types import PricedCost


class PriceCatalog:
    """Prices for models by name (and optional provider), from the embedded genai-prices snapshot."""

    def cost(self, model: str, provider: str | None, tokens: TokenCounts) -> PricedCost:
        """Exact cost of a call with these token counts; UnknownModelError lists close names when not found."""
        try:
            return bundled.price(model, provider, tokens)
        except UnknownModelError:
            raise UnknownModelError(self._unknown_message(model, provider)) from None

    @cached_property
    def model_names(self) -> list[str]:
        """Every known model id, sorted."""
        return sorted({model for _, model in bundled.known_models()})

    def _unknown_message(self, model: str, provider: str | None) -> str:
        where = f" from provider {provider!r}" if provider else ""
        close = difflib.get_close_matches(model.lower(), self.model_names, n=5, cutoff=0.5)
        hint = f"close names: {', '.join(close)}; " if close else ""
        return f"no price known for model {model[:100]!r}{where}; {hint}pass cost_usd to record the cost directly"
