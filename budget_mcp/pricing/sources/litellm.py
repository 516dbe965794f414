"""LiteLLM's `model_prices_and_context_window.json`: per-token prices and model facts for ~5,000 entries."""

import json
import re
from decimal import Decimal
from typing import Any

from budget_mcp.errors import PriceSourceError
from budget_mcp.pricing.names import canonical_provider, split_model
from budget_mcp.pricing.types import ModelRates, Rates, mtok_from_per_token

NAME = "litellm"
DEFAULT_URL = "https://raw.githubusercontent.com/BerriAI/litellm/main/model_prices_and_context_window.json"
TEXT_MODES = frozenset({"chat", "responses", "completion"})

_BASE_KEYS = ("input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost")
_WRITE_KEY = "cache_creation_input_token_cost"
_TIER_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost|cache_creation_input_token_cost)"
    r"_above_(\d+)k_tokens$"
)


def load(raw: bytes) -> dict[str, Any]:
    """The JSON object, numbers read by their decimal text; PriceSourceError when it is not LiteLLM's format."""
    try:
        data = json.loads(raw, parse_float=Decimal)
    except ValueError as exc:
        raise PriceSourceError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PriceSourceError("not LiteLLM's format: expected an object of model entries")
    return {k: v for k, v in data.items() if isinstance(v, dict) and k != "sample_spec"}


def parse(raw: bytes) -> list[ModelRates]:
    """Prices of the text models in the file, one per (provider, model); entries without prices are skipped."""
    found: dict[tuple[str, str], ModelRates] = {}
    for key, entry in load(raw).items():
        if entry.get("mode") not in TEXT_MODES:
            continue
        provider, model = identity(key, entry)
        base = _rates(entry, "")
        if base is None or (provider, model) in found:
            continue
        thresholds = sorted({int(m.group(2)) * 1000 for k in entry if (m := _TIER_KEY.match(k))})
        tiers = tuple((t, tier) for t in thresholds if (tier := _rates(entry, f"_above_{t // 1000}k_tokens")))
        found[(provider, model)] = ModelRates(provider, model, base, tiers)
    return list(found.values())


def identity(key: str, entry: dict[str, Any]) -> tuple[str, str]:
    """(canonical provider, model name without the provider prefix) of one entry."""
    prefix, model = split_model(key)
    provider = entry.get("litellm_provider") or prefix or ""
    return canonical_provider(str(provider)), model


def _rates(entry: dict[str, Any], suffix: str) -> Rates | None:
    values = [mtok_from_per_token(entry.get(k + suffix)) for k in (*_BASE_KEYS, _WRITE_KEY)]
    if values[0] is None and values[1] is None:
        return None
    return Rates(*values)
