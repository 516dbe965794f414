"""The shipped model facts table (budget_mcp/pricing/data/models.json, rebuilt by scripts/build_model_facts.py)."""

import json
from functools import cache
from importlib import resources

from budget_mcp.pricing.names import model_key
from budget_mcp.pricing.types import Capability, ModelFacts, Tier


@cache
def model_facts() -> tuple[ModelFacts, ...]:
    """Every model with curated facts and a tier, sorted by provider and model."""
    text = resources.files("budget_mcp.pricing").joinpath("data", "models.json").read_text()
    return tuple(
        ModelFacts(
            provider=row["provider"],
            model=row["model"],
            tier=Tier(row["tier"]),
            context_window=row["context_window"],
            max_input_tokens=row["max_input_tokens"],
            max_output_tokens=row["max_output_tokens"],
            capabilities=frozenset(Capability(c) for c in row["capabilities"]),
        )
        for row in json.loads(text)["models"]
    )


def find_facts(model: str, provider: str | None = None) -> ModelFacts | None:
    """The facts of a model by name (dots or dashes, any case), within a provider when one is named."""
    key = model_key(model)
    for facts in model_facts():
        if model_key(facts.model) == key and (provider is None or facts.provider == provider):
            return facts
    return None
