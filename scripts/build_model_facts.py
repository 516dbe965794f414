"""Rebuild budget_mcp/pricing/data/models.json: model facts from LiteLLM's price file plus curated tiers.

    .venv/bin/python scripts/build_model_facts.py tests/fixtures/litellm_model_prices.json.gz

(or a fresh model_prices_and_context_window.json from LiteLLM's repository, then update the fixture too).

The facts (context window, output limit, tools, vision, reasoning, JSON) come from LiteLLM's file
(MIT); the tiers from scripts/model_tiers.toml; the context window is the larger of LiteLLM's input limit
and genai-prices' window (each source is stale for some models).
"""

import gzip
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from budget_mcp.pricing.sources import litellm
from budget_mcp.pricing.sources.bundled import GenaiPrices
from budget_mcp.pricing.types import LONG_CONTEXT_TOKENS, Tier

ROOT = Path(__file__).resolve().parent.parent
TIERS = ROOT / "scripts" / "model_tiers.toml"
OUTPUT = ROOT / "budget_mcp" / "pricing" / "data" / "models.json"
FLAGS = {
    "tools": ("supports_function_calling",),
    "vision": ("supports_vision",),
    "reasoning": ("supports_reasoning",),
    "json": ("supports_response_schema", "supports_native_structured_output"),
}


def build(litellm_file: Path) -> dict[str, Any]:
    raw = litellm_file.read_bytes()
    if litellm_file.suffix == ".gz":
        raw = gzip.decompress(raw)
    entries: dict[tuple[str, str], dict[str, Any]] = {}
    for key, entry in litellm.load(raw).items():
        if entry.get("mode") in litellm.TEXT_MODES:
            entries.setdefault(litellm.identity(key, entry), entry)
    genai = GenaiPrices.bundled()
    models = []
    for tier, names in tomllib.loads(TIERS.read_text()).items():
        Tier(tier)
        for name in names:
            provider, _, model = name.partition("/")
            entry = entries.get((provider, model))
            if entry is None:
                sys.exit(f"{name}: not in {litellm_file.name} as a chat model; fix {TIERS.name}")
            max_input = int(entry["max_input_tokens"])
            capabilities = [cap for cap, keys in FLAGS.items() if any(entry.get(k) for k in keys)]
            if max_input >= LONG_CONTEXT_TOKENS:
                capabilities.append("long_context")
            models.append(
                {
                    "provider": provider,
                    "model": model,
                    "tier": tier,
                    "context_window": max(genai.context_window(model, provider) or 0, max_input),
                    "max_input_tokens": max_input,
                    "max_output_tokens": int(entry["max_output_tokens"]),
                    "capabilities": sorted(capabilities),
                }
            )
    return {
        "_generated": "by scripts/build_model_facts.py from LiteLLM's price file and model_tiers.toml; do not edit",
        "models": sorted(models, key=lambda m: (m["provider"], m["model"])),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    table = build(Path(sys.argv[1]))
    rows = ",\n".join(f"  {json.dumps(m)}" for m in table["models"])
    OUTPUT.write_text(f'{{"_generated": {json.dumps(table["_generated"])},\n "models": [\n{rows}\n]}}\n')
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
