"""The shipped model facts table: rebuilt from LiteLLM's file, it comes out the same; its facts are sane."""

import json
import runpy
from pathlib import Path

from budget_mcp.domain.records import TokenCounts
from budget_mcp.pricing import PriceCatalog, Tier
from budget_mcp.pricing.facts import model_facts

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_table_is_what_the_build_script_makes_from_litellms_file(
    litellm_bytes: bytes, tmp_path: Path
) -> None:
    source = tmp_path / "litellm_model_prices.json"
    source.write_bytes(litellm_bytes)
    build = runpy.run_path(str(ROOT / "scripts" / "build_model_facts.py"))["build"]

    rebuilt = build(source)

    shipped = json.loads((ROOT / "budget_mcp" / "pricing" / "data" / "models.json").read_text())
    assert rebuilt["models"] == shipped["models"]


def test_every_model_in_the_table_has_a_price_and_every_tier_is_present() -> None:
    catalog = PriceCatalog()
    facts = model_facts()

    assert {f.tier for f in facts} == set(Tier)
    for f in facts:
        assert catalog.cost(f.model, f.provider, TokenCounts(input=1_000, output=1_000)).cost_usd > 0, f.model
        assert f.max_output_tokens <= f.context_window and f.max_input_tokens > 0
