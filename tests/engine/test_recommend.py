"""recommend_model and estimate on the real catalog and a real ledger: requirements, windows, budget fit, ranking."""

from decimal import Decimal
from typing import Any

import pytest

from budget_mcp import BudgetEngine
from budget_mcp.errors import BudgetMcpError, UnknownModelError
from budget_mcp.pricing import Tier

pytestmark = pytest.mark.anyio

TIERS = list(Tier)


async def test_vision_needs_exclude_text_only_models(engine: BudgetEngine) -> None:
    anything = await engine.recommend("chat", needs=[], min_tier="standard", limit=50)
    seeing = await engine.recommend("chat", needs=["vision"], min_tier="standard", limit=50)

    text_only = {r.model for r in anything.recommendations if "vision" not in r.capabilities}
    assert "deepseek-chat" in text_only  # the filter has something to remove
    assert seeing.recommendations and all("vision" in r.capabilities for r in seeing.recommendations)
    assert not text_only & {r.model for r in seeing.recommendations}


async def test_a_900k_token_input_only_gets_long_context_models(engine: BudgetEngine) -> None:
    short = await engine.recommend("summarize", input_tokens=10_000, output_tokens=2_000, limit=50)
    long = await engine.recommend("summarize", input_tokens=900_000, output_tokens=2_000, limit=50)

    assert any(r.context_window < 902_000 for r in short.recommendations)
    assert long.recommendations
    assert all(r.context_window >= 902_000 for r in long.recommendations)
    assert all("long_context" in r.capabilities for r in long.recommendations)


async def test_a_tiny_budget_ranks_the_models_that_fit_first(engine: BudgetEngine) -> None:
    await engine.allocate("tiny", limit_usd="0.002")

    found = await engine.recommend(
        "write a reply", budget_id="tiny", input_tokens=2_000, output_tokens=1_000, min_tier="basic", limit=50
    )

    fits = [r.fits_budget for r in found.recommendations]
    assert found.remaining_usd == "0.002000"
    assert True in fits and False in fits
    assert fits == sorted(fits, reverse=True)  # every fitting model before every other
    for r in found.recommendations:
        assert (Decimal(r.estimated_cost_usd) <= Decimal("0.002")) == r.fits_budget
    fitting_costs = [Decimal(r.estimated_cost_usd) for r in found.recommendations if r.fits_budget]
    assert fitting_costs == sorted(fitting_costs)
    assert "does not fit the budget" in found.recommendations[-1].why
    assert found.recommendations[0].why.startswith("The cheapest model that meets the requirements and fits")


async def test_a_per_call_cap_decides_what_fits(engine: BudgetEngine) -> None:
    await engine.allocate("capped", limit_usd="100", per_call_usd="0.01")

    found = await engine.recommend("analyze", budget_id="capped", input_tokens=5_000, output_tokens=2_000, limit=50)

    over = [r for r in found.recommendations if not r.fits_budget]
    assert over and all(Decimal(r.estimated_cost_usd) > Decimal("0.01") for r in over)
    assert "per-call cap" in over[0].why


async def test_a_higher_tier_never_comes_back_cheaper_than_the_cheapest_lower_tier_choice(
    engine: BudgetEngine,
) -> None:
    cheapest = {}
    for tier in TIERS:
        found = await engine.recommend("code review", needs=["tools"], min_tier=tier, limit=1)
        cheapest[tier] = Decimal(found.recommendations[0].estimated_cost_usd)
        assert Tier(found.recommendations[0].tier).rank >= tier.rank

    for lower, higher in zip(TIERS, TIERS[1:], strict=False):
        assert cheapest[higher] >= cheapest[lower]
    assert cheapest[Tier.FRONTIER] > cheapest[Tier.BASIC]


async def test_needs_and_tier_are_inferred_from_the_task_and_said(engine: BudgetEngine) -> None:
    found = await engine.recommend("extract the invoice fields from this screenshot as JSON")

    assert found.needs == ["json", "vision"]
    assert found.min_tier == "basic"
    assert found.assumptions == [
        "input_tokens not given: assumed 2000",
        "output_tokens not given: assumed 1000",
        "needs inferred from the task: json, vision (pass needs to set them)",
        "min_tier inferred from the task: basic (pass min_tier to set it)",
    ]
    proof = await engine.recommend("prove this lemma step by step", input_tokens=1_000, output_tokens=4_000)
    assert proof.needs == ["reasoning"] and proof.min_tier == "advanced"


async def test_providers_limit_the_choice(engine: BudgetEngine) -> None:
    found = await engine.recommend("chat", providers=["anthropic", "gemini"], limit=50)

    assert {r.provider for r in found.recommendations} == {"anthropic", "google"}


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"needs": ["telepathy"]}, "needs 'telepathy' is unknown; use one of 'tools', 'vision'"),
        ({"min_tier": "best"}, "min_tier 'best' is unknown; use one of 'basic', 'standard'"),
        ({"limit": 0}, "limit must be between 1 and 50"),
        ({"input_tokens": -1}, "input_tokens"),
        ({"budget_id": "no/such"}, "budget 'no/such' does not exist"),
    ],
)
async def test_bad_recommendation_input_is_a_clear_error(
    engine: BudgetEngine, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(BudgetMcpError) as caught:
        await engine.recommend("chat", **kwargs)
    assert problem in str(caught.value)


async def test_estimate_names_the_price_and_source(engine: BudgetEngine) -> None:
    estimate = engine.estimate("claude-sonnet-4-5", input_tokens=250_000, output_tokens=1_000, cache_read_tokens=0)

    assert estimate.cost_usd == "1.522500"  # above 200k prompt tokens: $6 in, $22.50 out per million
    assert (estimate.input_usd_per_mtok, estimate.output_usd_per_mtok) == ("6", "22.5")
    assert estimate.source == "genai-prices 0.2.3" and estimate.provider == "anthropic"
    with pytest.raises(UnknownModelError):
        engine.estimate("gpt-9000")


async def test_check_without_max_output_tokens_prices_the_models_output_limit(engine: BudgetEngine) -> None:
    await engine.allocate("acme", limit_usd="1")

    worst = await engine.check("acme", model="gpt-4o", input_tokens=1_000)
    bounded = await engine.check("acme", model="gpt-4o", input_tokens=1_000, max_output_tokens=100)

    # gpt-4o may write 16,384 tokens: 1,000 x $2.50 + 16,384 x $10 per million.
    assert worst.estimated_cost_usd == "0.166340" and worst.estimated_tokens == 17_384
    assert worst.warnings[0].startswith("max_output_tokens not given: priced the worst case of 16384 output tokens")
    assert bounded.estimated_cost_usd == "0.003500" and bounded.warnings == []
