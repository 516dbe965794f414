"""OpenRouter's model list (`GET /api/v1/models`): per-token prices as decimal strings, per routed model."""

import json

from budget_mcp.errors import PriceSourceError
from budget_mcp.pricing.names import canonical_provider, split_model
from budget_mcp.pricing.types import ModelRates, Rates, mtok_from_per_token

NAME = "openrouter"
DEFAULT_URL = "https://openrouter.ai/api/v1/models"
_PRICE_KEYS = ("prompt", "completion", "input_cache_read", "input_cache_write")


def parse(raw: bytes) -> list[ModelRates]:
    """Prices of every model with a fixed price; routers with variable prices (-1) are skipped."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise PriceSourceError(f"not JSON: {exc}") from exc
    models = data.get("data") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise PriceSourceError('not OpenRouter\'s format: expected {"data": [models]}')
    found = []
    for item in models:
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            continue
        pricing = item.get("pricing")
        if not isinstance(pricing, dict):
            continue
        rates = Rates(*(mtok_from_per_token(pricing.get(k)) for k in _PRICE_KEYS))
        if rates.input is None or rates.output is None:
            continue
        prefix, model = split_model(item["id"])
        found.append(ModelRates(canonical_provider(prefix or NAME), model, rates))
    return found
