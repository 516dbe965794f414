"""Price files as the real sources publish them, built from the LiteLLM fixture."""

import gzip
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OPENROUTER_PROVIDERS = {"openai", "anthropic", "deepseek", "mistral", "xai"}


def litellm_file() -> bytes:
    """LiteLLM's full price file (3,475 text models)."""
    return gzip.decompress((FIXTURES / "litellm_model_prices.json.gz").read_bytes())


def openrouter_file(litellm_raw: bytes, changes: dict[str, dict[str, str]] | None = None) -> bytes:
    """An OpenRouter-shaped model list (`{"data": [...]}`, per-token prices as strings) from LiteLLM's entries."""
    entries = json.loads(litellm_raw, parse_float=Decimal)
    models: list[dict[str, Any]] = []
    for key, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("mode") != "chat" or "/" in key:
            continue
        provider = entry.get("litellm_provider")
        if provider not in OPENROUTER_PROVIDERS or "input_cost_per_token" not in entry:
            continue
        model_id = f"{'x-ai' if provider == 'xai' else provider}/{key}"
        pricing = {"prompt": str(entry["input_cost_per_token"]), "completion": str(entry["output_cost_per_token"])}
        if "cache_read_input_token_cost" in entry:
            pricing["input_cache_read"] = str(entry["cache_read_input_token_cost"])
        pricing.update((changes or {}).get(model_id, {}))
        models.append(
            {"id": model_id, "name": key, "context_length": entry.get("max_input_tokens"), "pricing": pricing}
        )
    models.append({"id": "openrouter/auto", "pricing": {"prompt": "-1", "completion": "-1"}})
    return json.dumps({"data": models}).encode()


def genai_published_file(count: int) -> bytes:
    """A genai-prices data file (the published format: a list of providers) with `count` made-up models."""
    models = [
        {
            "id": f"house-model-{i}",
            "match": {"equals": f"house-model-{i}"},
            "prices": {"input_mtok": "1.5", "output_mtok": "6"},
        }
        for i in range(count)
    ]
    provider = {"id": "house", "name": "House", "api_pattern": r"https://house\.example", "models": models}
    return json.dumps([{**provider, "model_match": {"starts_with": "house-"}}]).encode()
